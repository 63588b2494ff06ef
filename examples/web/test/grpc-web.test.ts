// gRPC-web through the gateway with Connect's client: unary calls, a server-streaming call
// and error statuses, against the real server.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { gatewayTransport, healthClient, inferenceClient } from "../src/client";
import { predictDigits } from "../src/digits";
import { HealthCheckResponse_ServingStatus } from "../src/gen/grpc/health/v1/health_pb";
import { SAMPLE_DIGITS } from "../src/samples";
import { bytesTensor, inferRequest, outputOf, outputTensors, tensor } from "../src/tensors";
import { GATEWAY_URL, needsGateway } from "./env";
import { samplePng } from "./png";

const transport = gatewayTransport(GATEWAY_URL);
const client = inferenceClient(transport);

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  const error = await call.then(
    () => assert.fail("the call succeeded"),
    (reason: unknown) => reason,
  );
  assert.ok(error instanceof ConnectError, `not a ConnectError: ${String(error)}`);
  return error;
}

describe("unary calls", { skip: needsGateway }, () => {
  test("ServerLive", async () => {
    const reply = await client.serverLive({});
    assert.equal(reply.live, true);
  });

  test("ModelMetadata of digits", async () => {
    const reply = await client.modelMetadata({ name: "digits" });
    assert.equal(reply.name, "digits");
    assert.deepEqual(reply.versions, ["1", "2"]);
    assert.deepEqual(
      reply.inputs.map((t) => [t.name, t.datatype, t.shape]),
      [["input", "FP32", [-1n, 64n]]],
    );
    assert.deepEqual(
      reply.outputs.map((t) => [t.name, t.datatype]).sort(),
      [
        ["label", "INT64"],
        ["probabilities", "FP32"],
      ],
    );
  });

  for (const version of ["1", "2"]) {
    test(`ModelInfer on digits version ${version} with raw contents`, async () => {
      const pixels = new Float32Array(SAMPLE_DIGITS.flatMap((sample) => sample.pixels));
      const input = tensor("input", "FP32", [SAMPLE_DIGITS.length, 64], pixels);
      const reply = await client.modelInfer(inferRequest("digits", [input], { version }));
      const labels = outputOf(outputTensors(reply), "label", "INT64").data;
      assert.equal(reply.modelVersion, version);
      assert.deepEqual(Array.from(labels, Number), SAMPLE_DIGITS.map((sample) => sample.label));
    });
  }

  test("ModelMetadata of digit_from_png: a pipeline with its own inputs and outputs", async () => {
    const reply = await client.modelMetadata({ name: "digit_from_png" });
    assert.equal(reply.platform, "ensemble");
    assert.deepEqual(
      reply.inputs.map((t) => [t.name, t.datatype, t.shape]),
      [["image", "BYTES", [-1n]]],
    );
  });

  test("digit_from_png classifies the samples sent as PNG bytes", async () => {
    const predictions = await predictDigits(client, SAMPLE_DIGITS.map((s) => samplePng(s.pixels)));
    assert.deepEqual(
      predictions.map((p) => p.label),
      SAMPLE_DIGITS.map((sample) => sample.label),
    );
    for (const p of predictions) {
      assert.equal(p.version, "1");
      assert.ok(Math.abs(p.probabilities.reduce((a, b) => a + b) - 1) < 1e-4);
    }
  });
});

describe("server streaming", { skip: needsGateway }, () => {
  test("Health/Watch on digits starts with SERVING", async () => {
    const abort = new AbortController();
    const stream = healthClient(transport).watch({ service: "digits" }, { signal: abort.signal });
    const statuses: HealthCheckResponse_ServingStatus[] = [];
    try {
      for await (const message of stream) {
        statuses.push(message.status);
        break; // Watch stays open until the status changes; the first message is enough.
      }
    } finally {
      abort.abort();
    }
    assert.deepEqual(statuses, [HealthCheckResponse_ServingStatus.SERVING]);
  });

  test("Health/Watch on an unknown service says SERVICE_UNKNOWN", async () => {
    const abort = new AbortController();
    const stream = healthClient(transport).watch({ service: "nope" }, { signal: abort.signal });
    try {
      for await (const message of stream) {
        assert.equal(message.status, HealthCheckResponse_ServingStatus.SERVICE_UNKNOWN);
        return;
      }
    } finally {
      abort.abort();
    }
    assert.fail("no message");
  });
});

describe("error statuses", { skip: needsGateway }, () => {
  const input = tensor("input", "FP32", [1, 64], new Float32Array(64));

  test("an unknown model is NOT_FOUND, with the server's message", async () => {
    const error = await rejection(client.modelInfer(inferRequest("no_such_model", [input])));
    assert.equal(error.code, Code.NotFound);
    assert.equal(error.rawMessage, "unknown model 'no_such_model'");
  });

  test("a bad shape is INVALID_ARGUMENT, naming the input", async () => {
    const bad = tensor("input", "FP32", [1, 63], new Float32Array(63));
    const error = await rejection(client.modelInfer(inferRequest("digits", [bad])));
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(
      error.rawMessage,
      "input 'input': shape [1, 63] does not match the model's [-1, 64] (-1 is any size)",
    );
  });

  test("bytes that are not an image are INVALID_ARGUMENT, naming the step", async () => {
    const text = bytesTensor("image", [new TextEncoder().encode("not a PNG")]);
    const error = await rejection(client.modelInfer(inferRequest("digit_from_png", [text])));
    assert.equal(error.code, Code.InvalidArgument);
    assert.equal(
      error.rawMessage,
      "pipeline 'digit_from_png' step 'decode_image': " +
        "input 'image' row 0 is not a PNG or JPEG image",
    );
  });
});
