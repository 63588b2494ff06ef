"""The V2 REST servicer through a real in-process grpc.aio server, as the gateway calls it:
HttpBody requests with path fields, headers as metadata; replies as HttpBody whose content
type carries the status and the binary header length as x-v2-* parameters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest_asyncio
from google.api import httpbody_pb2

from inference import http_service_pb2 as pb
from inference import http_service_pb2_grpc as pb_grpc
from server.app import InferenceServer
from server.settings import Settings


@pytest_asyncio.fixture
async def rest(double_repository: Path) -> AsyncIterator[pb_grpc.HTTPInferenceServiceStub]:
    settings = Settings(
        model_repository=double_repository, host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0
    )
    server = InferenceServer(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield pb_grpc.HTTPInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop()


async def _call(
    method: grpc.aio.UnaryUnaryMultiCallable,
    request: object,
    headers: tuple[tuple[str, str], ...] = (),
) -> tuple[dict[str, str], httpbody_pb2.HttpBody]:
    """The reply and what the gateway reads off it: the content type's parameters (and
    `content-type`, the type without them), and any initial metadata."""
    call = method(request, metadata=headers)
    reply = await call
    base, *parameters = (part.strip() for part in reply.content_type.split(";"))
    found = dict(await call.initial_metadata())  # type: ignore[arg-type]
    found.update(part.split("=", 1) for part in parameters)  # type: ignore[misc]
    found["content-type"] = base
    return found, reply


def _body(value: object, content: bytes = b"") -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(
        content_type="application/json", data=orjson.dumps(value) + content
    )


X = np.arange(8, dtype=np.float32).reshape(2, 4)


async def test_json_inference(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    body = {
        "id": "a",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X.tolist()}],
    }
    metadata, reply = await _call(
        rest.ModelInfer, pb.RestModelRequest(model_name="double", body=_body(body))
    )
    assert "x-v2-status" not in metadata
    assert reply.content_type == "application/json"
    assert set(metadata) == {"content-type"}  # no initial metadata either
    answer = orjson.loads(reply.data)
    assert answer["id"] == "a" and answer["model_version"] == "1"
    assert answer["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": (X * 2 + 1).ravel().tolist()}
    ]


async def test_binary_inference(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": 32},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    request = pb.RestModelRequest(
        model_name="double",
        model_version="1",
        body=httpbody_pb2.HttpBody(
            content_type="application/octet-stream", data=header + X.tobytes()
        ),
    )
    metadata, reply = await _call(
        rest.ModelInfer, request, (("inference-header-content-length", str(len(header))),)
    )
    length = int(metadata["x-v2-header-length"])
    assert metadata["content-type"] == "application/octet-stream"
    assert "x-v2-status" not in metadata
    assert orjson.loads(reply.data[:length])["outputs"][0]["parameters"] == {"binary_data_size": 32}
    np.testing.assert_array_equal(
        np.frombuffer(reply.data[length:], np.float32), (X * 2 + 1).ravel()
    )


async def test_errors_are_replies_with_a_status(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    metadata, reply = await _call(
        rest.ModelInfer, pb.RestModelRequest(model_name="nope", body=_body({"inputs": []}))
    )
    assert metadata["x-v2-status"] == "404"
    assert orjson.loads(reply.data) == {"error": "unknown model 'nope'"}


async def test_readiness_by_status(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    ready, reply = await _call(rest.ModelReady, pb.RestModelRequest(model_name="double"))
    assert "x-v2-status" not in ready and orjson.loads(reply.data) == {
        "name": "double",
        "ready": True,
    }
    unknown, _ = await _call(
        rest.ModelReady, pb.RestModelRequest(model_name="double", model_version="9")
    )
    assert unknown["x-v2-status"] == "404"
    metadata, reply = await _call(rest.ServerReady, pb.RestServerRequest())
    assert "x-v2-status" not in metadata and orjson.loads(reply.data) == {"ready": True}


async def test_config_is_the_object_itself(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    _, reply = await _call(rest.ModelConfig, pb.RestModelRequest(model_name="double"))
    config = orjson.loads(reply.data)
    assert config["name"] == "double" and config["max_batch_size"] == 16
    assert config["input"] == [
        {"name": "x", "data_type": "TYPE_FP32", "dims": [4], "optional": False}
    ]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 2000


async def test_unload_and_load(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    _, reply = await _call(rest.RepositoryModelUnload, pb.RestModelRequest(model_name="double"))
    assert reply.data == b"{}"
    metadata, _ = await _call(rest.ModelReady, pb.RestModelRequest(model_name="double"))
    assert metadata["x-v2-status"] in {"400", "404"}
    _, index = await _call(rest.RepositoryIndex, pb.RestServerRequest())
    assert [(e["name"], e["state"]) for e in orjson.loads(index.data)] == [
        ("double", "UNAVAILABLE")
    ]
    await _call(rest.RepositoryModelLoad, pb.RestModelRequest(model_name="double"))
    metadata, _ = await _call(rest.ModelReady, pb.RestModelRequest(model_name="double"))
    assert "x-v2-status" not in metadata


async def test_override_parameters_are_refused(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    request = pb.RestModelRequest(model_name="double", body=_body({"parameters": {"config": "{}"}}))
    metadata, reply = await _call(rest.RepositoryModelLoad, request)
    assert metadata["x-v2-status"] == "400"
    assert "unsupported repository parameters ['config']" in orjson.loads(reply.data)["error"]


async def test_unload_dependents_must_be_a_boolean(rest: pb_grpc.HTTPInferenceServiceStub) -> None:
    body = _body({"parameters": {"unload_dependents": "yes"}})
    metadata, reply = await _call(
        rest.RepositoryModelUnload, pb.RestModelRequest(model_name="double", body=body)
    )
    assert metadata["x-v2-status"] == "400"
    assert orjson.loads(reply.data) == {"error": "parameters.unload_dependents must be a boolean"}
