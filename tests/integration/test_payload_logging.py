"""Payload logging on a real server: opt-in per model in config.yaml, sampled, to the log
stream or a file; it records input shapes, datatypes and digests, and output values only
up to the configured element count."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from processes import ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

Writer = Callable[[Path, str, dict[int, bytes], str], Path]
LOGGED = "max_batch_size: 8\npayload_logging: {sample: 1, max_output_elements: 2}\n"
HALF = "max_batch_size: 8\npayload_logging: {sample: 0.5}\n"
QUIET = "max_batch_size: 8\n"


def _infer(stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str, x: np.ndarray) -> None:
    message = service_pb2.ModelInferRequest(model_name=model, id=f"{model}-{x.shape[0]}")
    message.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    message.raw_input_contents.append(x.tobytes())
    stub.ModelInfer(message, timeout=30)


def _records(lines: list[str]) -> list[dict[str, object]]:
    return [r for r in map(json.loads, lines) if r.get("event") == "payload"]


def _repository(
    root: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> Path:
    write_model(root, "logged", {1: add_constant_model(1.0)}, LOGGED)
    write_model(root, "half", {1: add_constant_model(1.0)}, HALF)
    write_model(root, "quiet", {1: add_constant_model(1.0)}, QUIET)
    return root


def _send(server: ServerProcess) -> tuple[np.ndarray, np.ndarray]:
    one = np.array([[1.5, -2.0]], np.float32)
    two = np.arange(4, dtype=np.float32).reshape(2, 2)
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _infer(stub, "logged", one)
        _infer(stub, "logged", two)
        for _ in range(3):
            _infer(stub, "quiet", one)
        for _ in range(200):
            _infer(stub, "half", one)
    return one, two


def test_payload_records_hold_what_is_configured_and_nothing_more(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    root = _repository(tmp_path / "models", write_model, add_constant_model)
    with start_server(root) as server:
        one, two = _send(server)
    records = _records(server.log_lines)
    logged = [r for r in records if r["model"] == "logged"]
    assert [r["request_id"] for r in logged] == ["logged-1", "logged-2"]
    first, second = logged
    assert first["inputs"] == [
        {
            "name": "x",
            "datatype": "FP32",
            "shape": [1, 2],
            "sha256": hashlib.sha256(one.tobytes()).hexdigest(),
        }
    ]
    # y = x + 1: two elements fit max_output_elements, four do not.
    assert first["outputs"] == [
        {
            "name": "y",
            "datatype": "FP32",
            "shape": [1, 2],
            "sha256": hashlib.sha256((one + 1).tobytes()).hexdigest(),
            "values": [2.5, -1.0],
        }
    ]
    (output,) = second["outputs"]  # type: ignore[misc]
    assert "values" not in output and output["shape"] == [2, 2]
    assert output["sha256"] == hashlib.sha256((two + 1).tobytes()).hexdigest()
    for record in records:
        assert {"values"} & set(record["inputs"][0]) == set()  # type: ignore[index]
        assert record["status"] == "ok" and record["version"] == 1
    assert not [r for r in records if r["model"] == "quiet"]
    half = len([r for r in records if r["model"] == "half"])
    assert 60 <= half <= 140, half  # sample 0.5 of 200 (outside: p < 1e-8)


def test_payload_log_file(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    root = _repository(tmp_path / "models", write_model, add_constant_model)
    sink = tmp_path / "payloads.jsonl"
    with start_server(root, "--payload-log-file", str(sink)) as server:
        _send(server)
    assert _records(server.log_lines) == []  # not on the log stream
    records = _records(sink.read_text().splitlines())
    assert [r["request_id"] for r in records if r["model"] == "logged"] == ["logged-1", "logged-2"]


def test_failed_requests_are_logged_with_their_reason(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    root = _repository(tmp_path / "models", write_model, add_constant_model)
    with start_server(root) as server, grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        message = service_pb2.ModelInferRequest(model_name="logged", id="bad")
        message.inputs.add(name="x", datatype="FP32", shape=[1, 3])
        message.raw_input_contents.append(np.zeros((1, 3), np.float32).tobytes())
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(message, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    (record,) = _records(server.log_lines)
    assert record["status"] == "invalid_request" and "outputs" not in record
    assert record["inputs"] == [
        {
            "name": "x",
            "datatype": "FP32",
            "shape": [1, 3],
            "sha256": hashlib.sha256(np.zeros((1, 3), np.float32).tobytes()).hexdigest(),
        }
    ]
