// The gRPC-web example in README.md and docs/web.md (a test keeps them equal to this file).
// In examples/web, after `npm ci && npm run build`: npx tsx snippet.ts
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { GRPCInferenceService } from "./src/gen/inference/grpc_service_pb";

const transport = createGrpcWebTransport({
  baseUrl: process.env.GATEWAY_URL ?? "http://127.0.0.1:8000", // the gateway (`make run`)
  useBinaryFormat: true,
});
const client = createClient(GRPCInferenceService, transport);

// A handwritten 1 from scikit-learn's digits: 8x8 pixels, 0..16, row by row.
const pixels = new Float32Array([
  0, 0, 0, 0, 12, 5, 0, 0, 0, 0, 0, 2, 16, 12, 0, 0, 0, 0, 1, 12, 16, 11, 0, 0, 0, 2, 12, 16,
  16, 10, 0, 0, 0, 6, 11, 5, 15, 6, 0, 0, 0, 0, 0, 1, 16, 9, 0, 0, 0, 0, 0, 2, 16, 11, 0, 0, 0,
  0, 0, 3, 16, 8, 0, 0,
]);
const reply = await client.modelInfer({
  modelName: "digits",
  inputs: [{ name: "input", datatype: "FP32", shape: [1n, 64n] }],
  outputs: [{ name: "label" }],
  rawInputContents: [new Uint8Array(pixels.buffer)], // little-endian FP32
});
const labels = new BigInt64Array(reply.rawOutputContents[0]!.slice().buffer); // INT64
console.log(reply.modelName, reply.modelVersion, labels[0]); // digits 2 1n
