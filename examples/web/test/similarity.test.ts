// sentence_embedding through the gateway: raw sentences in, unit-length embeddings out.
import assert from "node:assert/strict";
import { test } from "node:test";
import { gatewayTransport, inferenceClient } from "../src/client";
import { dot, embed, similarity } from "../src/similarity";
import { GATEWAY_URL, needsGateway } from "./env";

test("dot", () => {
  assert.equal(dot(new Float32Array([1, 0]), new Float32Array([0, 2])), 0);
  assert.equal(dot(new Float32Array([1, 2]), new Float32Array([3, 4])), 11);
});

const options = { skip: needsGateway };

test("sentence_embedding gives one unit-length embedding per sentence", options, async () => {
  const client = inferenceClient(gatewayTransport(GATEWAY_URL));
  const embeddings = await embed(client, ["A man is playing a guitar.", "Déjà vu", "東京"]);
  assert.equal(embeddings.length, 3);
  for (const embedding of embeddings) {
    assert.equal(embedding.length, 384);
    assert.ok(Math.abs(dot(embedding, embedding) - 1) < 1e-5);
  }
});

test("sentence_embedding finds paraphrases closer than unrelated sentences", options, async () => {
  const client = inferenceClient(gatewayTransport(GATEWAY_URL));
  const guitar = "A man is playing a guitar.";
  const close = await similarity(client, guitar, "Someone plays the guitar.");
  const far = await similarity(client, guitar, "The stock market fell sharply today.");
  // models/README.md: about 0.84 for this pair, from Python.
  assert.ok(Math.abs(close - 0.84) < 0.02, `similarity ${close}`);
  assert.ok(far < 0.3, `similarity ${far}`);
});
