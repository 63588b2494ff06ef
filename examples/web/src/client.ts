// Typed clients for the inference server over gRPC-web, through the Envoy gateway.
//
// The service descriptors are generated from protos/ (src/gen/, `npm run generate`);
// Connect's gRPC-web transport speaks the binary gRPC-web protocol that Envoy's grpc_web
// filter turns into gRPC. It runs on fetch, so the same code works in browsers and Node.
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Health } from "./gen/grpc/health/v1/health_pb";
import { GRPCInferenceService } from "./gen/inference/grpc_service_pb";

export type InferenceClient = Client<typeof GRPCInferenceService>;
export type HealthClient = Client<typeof Health>;

/** A gRPC-web transport to the gateway at `baseUrl` (e.g. "http://127.0.0.1:8000"). */
export function gatewayTransport(baseUrl: string): Transport {
  return createGrpcWebTransport({ baseUrl, useBinaryFormat: true });
}

/** The KServe V2 service: ServerLive, ModelMetadata, ModelInfer, ... */
export function inferenceClient(transport: Transport): InferenceClient {
  return createClient(GRPCInferenceService, transport);
}

/** grpc.health.v1.Health: service "" is the server, a model's name is that model. */
export function healthClient(transport: Transport): HealthClient {
  return createClient(Health, transport);
}
