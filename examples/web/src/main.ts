// The demo page: draw or pick a digit and see `digits` classify it; type two sentences and
// see how similar `minilm` finds them. Every call goes over gRPC-web through the gateway
// that serves this page (or the one named by ?gateway=URL, which must allow this origin).
import { Code, ConnectError } from "@connectrpc/connect";
import { gatewayTransport, inferenceClient } from "./client";
import { predictDigits, type DigitPrediction } from "./digits";
import { downsample, type Rgba } from "./downsample";
import { DrawingPad } from "./pad";
import { drawPreview } from "./preview";
import { SAMPLE_DIGITS } from "./samples";
import { similarity } from "./similarity";
import { fetchTokenizer, type Tokenize } from "./tokenizer";

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
const pad = new DrawingPad(element("pad", HTMLCanvasElement), () => classify(pad.image()));
const preview = element("preview", HTMLCanvasElement);
const version = element("version", HTMLSelectElement);
const label = element("digit-label", HTMLElement);
const bars = element("probabilities", HTMLOListElement);
const digitError = element("digit-error", HTMLElement);

function showPrediction(prediction: DigitPrediction): void {
  label.textContent = String(prediction.label);
  label.dataset.version = prediction.version;
  element("digit-version", HTMLElement).textContent = `model version ${prediction.version}`;
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

let current: readonly number[] | null = null;

async function predict(pixels: readonly number[] | null): Promise<void> {
  current = pixels;
  drawPreview(preview, pixels);
  preview.dataset.pixels = pixels?.join(",") ?? "";
  digitError.textContent = "";
  if (pixels === null) {
    label.textContent = "–";
    bars.replaceChildren();
    return;
  }
  label.textContent = "…";
  try {
    const [prediction] = await predictDigits(client, [pixels], version.value);
    if (pixels === current && prediction !== undefined) showPrediction(prediction);
  } catch (error) {
    digitError.textContent = describe(error);
  }
}

function classify(image: Rgba): void {
  void predict(downsample(image));
}

const samples = element("samples", HTMLElement);
for (const sample of SAMPLE_DIGITS) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = String(sample.label);
  button.title = `load_digits() row ${sample.index}`;
  button.dataset.sample = String(sample.label);
  button.addEventListener("click", () => {
    pad.clear();
    void predict(sample.pixels);
  });
  samples.append(button);
}
element("clear", HTMLButtonElement).addEventListener("click", () => {
  pad.clear();
  void predict(null);
});
version.addEventListener("change", () => void predict(current));
drawPreview(preview, null);

// Sentence similarity: the tokenizer files are served next to this page.
const form = element("similarity-form", HTMLFormElement);
const result = element("similarity", HTMLElement);
const tokensView = element("tokens", HTMLElement);
let tokenize: Promise<Tokenize> | null = null;

form.addEventListener("submit", (event) => {
  event.preventDefault();
  void compare();
});

async function compare(): Promise<void> {
  const texts = [element("sentence-a", HTMLInputElement), element("sentence-b", HTMLInputElement)];
  result.textContent = "…";
  delete result.dataset.value;
  try {
    tokenize ??= fetchTokenizer(new URL("./", location.href).href);
    const encode = await tokenize;
    const [a, b] = texts.map((input) => encode(input.value));
    const value = await similarity(client, a!, b!);
    result.textContent = value.toFixed(3);
    result.dataset.value = String(value);
    tokensView.textContent = [a!, b!].map((t) => t.tokens.join(" ")).join("\n");
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
