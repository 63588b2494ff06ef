// minilm through the gateway, tokenized here by the same code and files as the page.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { gatewayTransport, inferenceClient } from "../src/client";
import { cosine, meanPool, similarity } from "../src/similarity";
import { tokenizerFrom } from "../src/tokenizer";
import { GATEWAY_URL, needsGateway } from "./env";

/** The tokenizer files `npm run build` puts in dist/ for the page. */
function builtTokenizer() {
  const read = (name: string): object =>
    JSON.parse(readFileSync(new URL(`../dist/${name}`, import.meta.url), "utf8")) as object;
  return tokenizerFrom(read("tokenizer.json"), read("tokenizer_config.json"));
}

test("meanPool averages the states where the mask is 1", () => {
  // Two rows, three tokens, two dimensions.
  const states = new Float32Array([1, 2, 3, 4, 100, 100, 5, 6, 7, 8, 9, 10]);
  const pooled = meanPool(states, [[1, 1, 0], [1, 1, 1]], 3, 2);
  assert.deepEqual(pooled.map((p) => Array.from(p)), [[2, 3], [7, 8]]);
});

test("cosine", () => {
  assert.equal(cosine(new Float32Array([1, 0]), new Float32Array([0, 2])), 0);
  assert.ok(Math.abs(cosine(new Float32Array([1, 1]), new Float32Array([2, 2])) - 1) < 1e-6);
});

test("the tokenizer matches the Python tokenizers package", () => {
  const tokens = builtTokenizer()("A man is playing a guitar.");
  // From tokenizers.Tokenizer.from_file(...).encode(...), before its padding to 128.
  assert.deepEqual(tokens.ids, [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102]);
  assert.deepEqual(tokens.attentionMask, Array(9).fill(1));
  assert.deepEqual(tokens.typeIds, Array(9).fill(0));
});

test("minilm finds paraphrases closer than unrelated sentences", { skip: needsGateway }, async () => {
  const client = inferenceClient(gatewayTransport(GATEWAY_URL));
  const tokenize = builtTokenizer();
  const guitar = tokenize("A man is playing a guitar.");
  const close = await similarity(client, guitar, tokenize("Someone plays the guitar."));
  const far = await similarity(client, guitar, tokenize("The stock market fell sharply today."));
  // models/README.md: about 0.84 for this pair, from Python.
  assert.ok(Math.abs(close - 0.84) < 0.02, `similarity ${close}`);
  assert.ok(far < 0.3, `similarity ${far}`);
});
