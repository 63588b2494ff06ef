// Raw contents of BYTES inputs: each element's 4-byte little-endian length, then its bytes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { bytesTensor, inferRequest, textTensor } from "../src/tensors";

test("BYTES elements are length-prefixed, little-endian, in row order", () => {
  const image = bytesTensor("image", [new Uint8Array([7, 8, 9]), new Uint8Array()]);
  const request = inferRequest("m", [image]);
  assert.deepEqual(Array.from(request.rawInputContents[0]!), [3, 0, 0, 0, 7, 8, 9, 0, 0, 0, 0]);
  assert.deepEqual(request.inputs[0]!.shape, [2n]);
  assert.equal(request.inputs[0]!.datatype, "BYTES");
});

test("text goes as UTF-8", () => {
  const request = inferRequest("m", [textTensor("text", ["é!"])]);
  assert.deepEqual(Array.from(request.rawInputContents[0]!), [3, 0, 0, 0, 0xc3, 0xa9, 0x21]);
});
