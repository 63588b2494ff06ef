"""Pins the public contract: the RPCs of `inference.GRPCInferenceService`, the field
numbers that wire compatibility with Triton's clients rests on (../shared/PROTOCOL.md),
and the V2 REST paths that Envoy's transcoder reads from the annotations of
`inference.HTTPInferenceService` (the gRPC service carries none, as Triton's)."""

from __future__ import annotations

import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from inference import grpc_service_pb2 as pb
from inference import http_service_pb2 as http
from inference import model_config_pb2 as mc

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
REST_SERVICE = http.DESCRIPTOR.services_by_name["HTTPInferenceService"]

RPCS = {
    # name: (input, output, client streaming, server streaming)
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse", False, False),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse", False, False),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse", False, False),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse", False, False),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse", False, False),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse", False, False),
    "ModelStreamInfer": ("ModelInferRequest", "ModelStreamInferResponse", True, True),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse", False, False),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse", False, False),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse", False, False),
    "RepositoryModelLoad": (
        "RepositoryModelLoadRequest",
        "RepositoryModelLoadResponse",
        False,
        False,
    ),
    "RepositoryModelUnload": (
        "RepositoryModelUnloadRequest",
        "RepositoryModelUnloadResponse",
        False,
        False,
    ),
}

FIELDS: list[tuple[type[Message], str, int]] = [
    (pb.ModelInferRequest, "model_name", 1),
    (pb.ModelInferRequest, "id", 3),
    (pb.ModelInferRequest, "inputs", 5),
    (pb.ModelInferRequest, "outputs", 6),
    (pb.ModelInferRequest, "raw_input_contents", 7),
    (pb.ModelInferRequest.InferInputTensor, "contents", 5),
    (pb.InferTensorContents, "fp32_contents", 6),
    (pb.InferTensorContents, "bytes_contents", 8),
    (pb.ModelInferResponse, "outputs", 5),
    (pb.ModelInferResponse, "raw_output_contents", 6),
    (pb.ModelStreamInferResponse, "error_message", 1),
    (pb.ModelStreamInferResponse, "infer_response", 2),
    (pb.ModelConfigResponse, "config", 1),
    (mc.ModelConfig, "max_batch_size", 4),
    (mc.ModelConfig, "instance_group", 7),
    (mc.ModelConfig, "dynamic_batching", 11),
    (mc.ModelConfig, "backend", 17),
    (mc.ModelInput, "dims", 4),
    (mc.ModelInput, "optional", 8),
    (mc.ModelOutput, "dims", 3),
    (mc.ModelDynamicBatching, "max_queue_delay_microseconds", 2),
    (mc.ModelDynamicBatching, "default_queue_policy", 6),
    (pb.ModelStatistics, "execution_count", 5),
    (pb.InferBatchStatistics, "batch_size", 1),
]

REST = {
    "ServerLive": ("get", "/v2/health/live"),
    "ServerReady": ("get", "/v2/health/ready"),
    "ModelReady": ("get", "/v2/models/{model_name}/ready"),
    "ServerMetadata": ("get", "/v2"),
    "ModelMetadata": ("get", "/v2/models/{model_name}"),
    "ModelInfer": ("post", "/v2/models/{model_name}/infer"),
    "ModelConfig": ("get", "/v2/models/{model_name}/config"),
    "ModelStatistics": ("get", "/v2/models/stats"),
    "RepositoryIndex": ("post", "/v2/repository/index"),
    "RepositoryModelLoad": ("post", "/v2/repository/models/{model_name}/load"),
    "RepositoryModelUnload": ("post", "/v2/repository/models/{model_name}/unload"),
}


def test_the_service_has_exactly_the_required_and_extension_rpcs() -> None:
    assert SERVICE.full_name == "inference.GRPCInferenceService"
    found = {
        method.name: (
            method.input_type.name,
            method.output_type.name,
            method.client_streaming,
            method.server_streaming,
        )
        for method in SERVICE.methods
    }
    assert found == RPCS


@pytest.mark.parametrize(
    ("message", "field", "number"),
    FIELDS,
    ids=[f"{m.DESCRIPTOR.name}.{f}" for m, f, _ in FIELDS],
)
def test_field_numbers_match_triton(message: type[Message], field: str, number: int) -> None:
    descriptor: Descriptor = message.DESCRIPTOR
    assert descriptor.full_name.startswith("inference.")
    assert descriptor.fields_by_name[field].number == number


def test_the_grpc_service_has_no_rest_annotations() -> None:
    for method in SERVICE.methods:
        assert not method.GetOptions().HasExtension(annotations_pb2.http), method.name


def test_the_rest_service_answers_every_path_with_an_http_body() -> None:
    assert REST_SERVICE.full_name == "inference.HTTPInferenceService"
    assert {m.name for m in REST_SERVICE.methods} == set(REST)
    for method in REST_SERVICE.methods:
        assert method.output_type.full_name == "google.api.HttpBody", method.name


@pytest.mark.parametrize(("rpc", "binding"), REST.items(), ids=list(REST))
def test_each_rest_rpc_carries_its_v2_rest_path(rpc: str, binding: tuple[str, str]) -> None:
    options = REST_SERVICE.methods_by_name[rpc].GetOptions()
    assert options.HasExtension(annotations_pb2.http)
    rule = options.Extensions[annotations_pb2.http]
    verb, path = binding
    assert (rule.WhichOneof("pattern"), getattr(rule, verb)) == (verb, path)
