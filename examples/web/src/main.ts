// The demo page: draw or pick a digit and see `digit_from_png` classify the pad's PNG; type
// two sentences and see how similar `sentence_embedding` finds them. The server does all the
// preprocessing (decoding, resizing, tokenizing, pooling); the page sends images and text.
// Every call goes over gRPC-web through the gateway that serves this page (or the one named
// by ?gateway=URL, which must allow this origin).
import { Code, ConnectError } from "@connectrpc/connect";
import { gatewayTransport, inferenceClient } from "./client";
import { predictDigits, type DigitPrediction } from "./digits";
import { DrawingPad } from "./pad";
import { SAMPLE_DIGITS } from "./samples";
import { similarity } from "./similarity";

function element<T extends HTMLElement>(id: string, type: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof type)) throw new Error(`#${id} is missing`);
  return found;
}

function describe(error: unknown): string {
  if (error instanceof ConnectError) return `${Code[error.code]}: ${error.rawMessage}`;
  return error instanceof Error ? error.message : String(error);
}

const gateway = new URLSearchParams(location.search).get("gateway") ?? location.origin;
const client = inferenceClient(gatewayTransport(gateway));

const status = element("status", HTMLElement);
const pad = new DrawingPad(element("pad", HTMLCanvasElement), () => void classify());
const label = element("digit-label", HTMLElement);
const bars = element("probabilities", HTMLOListElement);
const digitError = element("digit-error", HTMLElement);

function showPrediction(prediction: DigitPrediction): void {
  label.textContent = String(prediction.label);
  label.dataset.version = prediction.version;
  const version = element("digit-version", HTMLElement);
  version.textContent = `digit_from_png version ${prediction.version}`;
  bars.replaceChildren(
    ...prediction.probabilities.map((p, digit) => {
      const item = document.createElement("li");
      item.dataset.digit = String(digit);
      item.style.setProperty("--p", p.toFixed(4));
      item.textContent = `${digit}: ${(100 * p).toFixed(1)}%`;
      if (digit === prediction.label) item.classList.add("top");
      return item;
    }),
  );
}

let asked = 0; // the latest request; an older answer arriving late is dropped

async function classify(): Promise<void> {
  const mine = ++asked;
  digitError.textContent = "";
  label.textContent = "…";
  try {
    const [prediction] = await predictDigits(client, [await pad.png()]);
    if (mine === asked && prediction !== undefined) showPrediction(prediction);
  } catch (error) {
    if (mine === asked) digitError.textContent = describe(error);
  }
}

function reset(): void {
  asked++;
  label.textContent = "–";
  delete label.dataset.version;
  bars.replaceChildren();
  digitError.textContent = "";
}

const samples = element("samples", HTMLElement);
for (const sample of SAMPLE_DIGITS) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(sample.label);
  button.title = `load_digits() row ${sample.index}`;
  button.dataset.sample = String(sample.label);
  button.addEventListener("click", () => {
    pad.show(sample.pixels);
    void classify();
  });
  samples.append(button);
}
element("clear", HTMLButtonElement).addEventListener("click", () => {
  pad.clear();
  reset();
});

// Sentence similarity: the sentences go as they are typed.
const form = element("similarity-form", HTMLFormElement);
const result = element("similarity", HTMLElement);

form.addEventListener("submit", (event) => {
  event.preventDefault();
  void compare();
});

async function compare(): Promise<void> {
  const [a, b] = ["sentence-a", "sentence-b"].map((id) => element(id, HTMLInputElement).value);
  result.textContent = "…";
  delete result.dataset.value;
  try {
    const value = await similarity(client, a!, b!);
    result.textContent = value.toFixed(3);
    result.dataset.value = String(value);
  } catch (error) {
    result.textContent = describe(error);
  }
}

async function checkServer(): Promise<void> {
  try {
    const [live, metadata] = await Promise.all([client.serverLive({}), client.serverMetadata({})]);
    status.textContent = live.live
      ? `${metadata.name} ${metadata.version} is live at ${gateway}`
      : "the server is not live";
    status.dataset.live = String(live.live);
  } catch (error) {
    status.textContent = `cannot reach the server: ${describe(error)}`;
  }
  document.body.dataset.ready = "true";
}

void checkServer();
