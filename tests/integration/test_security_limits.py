"""Rate limits and hard limits on a real server process.

Rate limits use a tiny rate (0.5 requests/s, burst 2), so that a burst is refused and the
refill is seen by polling, with no timed assertion. Hard limits are each tried just under
and just over; the transport limits (streams, concurrent RPCs, keepalive, connection age)
are tried in tests/unit/test_server_limits.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from onnx import TensorProto, helper
from processes import ServerProcess, start_server
from security_material import KeysFile
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

Code = grpc.StatusCode
CONFIG = "max_batch_size: 8\n"
REFILL_WAIT_S = 15.0  # generous: a token comes every 2 s


@dataclass
class Limited:
    server: ServerProcess
    keys: KeysFile
    stub: service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
    connect: Callable[[ServerProcess], grpc.Channel],
) -> Iterator[Limited]:
    root = tmp_path_factory.mktemp("limited")
    write_model(root / "models", "a", {1: add_constant_model(1.0)}, CONFIG)
    keys = KeysFile(root / "keys.yaml")
    for name in ("slow", "bystander", "streamer", "poller"):
        keys.add(name, ["*"])  # the server's rate: 0.5/s, burst 2
    keys.add("unlimited", ["*"], rate=0)
    flags = ["--api-keys-file", str(keys.path), "--rate-limit", "0.5", "--rate-burst", "2"]
    with start_server(root / "models", *flags, "--security-reload-s", "0.2") as server:
        yield Limited(server, keys, service_pb2_grpc.GRPCInferenceServiceStub(connect(server)))


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def live(stub: service_pb2_grpc.GRPCInferenceServiceStub, key: str) -> grpc.RpcError | None:
    try:
        stub.ServerLive(service_pb2.ServerLiveRequest(), metadata=bearer(key))
    except grpc.RpcError as exc:
        return exc
    return None


def infer_request(request_id: str) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="a", id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    return request


def test_a_burst_beyond_the_bucket_gets_resource_exhausted_with_retry_info(
    limited: Limited,
) -> None:
    key = limited.keys.keys["slow"]
    assert [live(limited.stub, key) for _ in range(2)] == [None, None]
    refused = live(limited.stub, key)
    assert refused is not None and refused.code() == Code.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    message = refused.details()  # type: ignore[attr-defined]
    assert message.startswith(
        "rate limit of 0.5 requests/s (burst 2) for API key 'slow' exceeded; retry after"
    )
    status = rpc_status.from_call(refused)  # type: ignore[arg-type]
    assert status is not None and status.code == Code.RESOURCE_EXHAUSTED.value[0]
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 2.0
    trailers = dict(refused.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["retry-after"] in ("1", "2")


def test_other_keys_are_unaffected_and_the_bucket_refills(limited: Limited) -> None:
    slow, bystander = limited.keys.keys["slow"], limited.keys.keys["bystander"]
    while live(limited.stub, slow) is None:  # empty the bucket, whatever is left in it
        pass
    assert [live(limited.stub, bystander) for _ in range(2)] == [None, None]
    for _ in range(20):
        assert live(limited.stub, limited.keys.keys["unlimited"]) is None
    deadline = time.monotonic() + REFILL_WAIT_S
    while live(limited.stub, slow) is not None:  # a refused call takes no token
        assert time.monotonic() < deadline, "the bucket did not refill"
        time.sleep(0.1)
    assert live(limited.stub, slow) is not None  # one token came back, not the burst


def test_stream_messages_each_take_a_token(limited: Limited) -> None:
    requests = [infer_request(str(index)) for index in range(4)]
    replies = list(
        limited.stub.ModelStreamInfer(
            iter(requests), metadata=bearer(limited.keys.keys["streamer"])
        )
    )
    codes = [r.infer_response.parameters["error_code"].string_param for r in replies]
    assert sorted(codes) == ["", "", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]


def test_the_keys_file_is_reloaded_without_a_signal(limited: Limited) -> None:
    """--security-reload-s 0.2: an edit is picked up by the periodic check."""
    new = limited.keys.add("added-later", ["*"])
    deadline = time.monotonic() + REFILL_WAIT_S
    while (refused := live(limited.stub, new)) is not None:
        assert refused.code() == Code.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the edited keys file was not picked up"
        time.sleep(0.05)


def test_without_authentication_the_limit_is_per_client_address(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    write_model(tmp_path / "models", "a", {1: add_constant_model(1.0)}, CONFIG)
    with start_server(tmp_path / "models", "--rate-limit", "0.5", "--rate-burst", "2") as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            assert client.is_server_live() and client.is_server_live()
            with pytest.raises(InferenceServerException) as info:
                client.is_server_live()
            assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            assert "for client 'ipv4:127.0.0.1' exceeded" in str(info.value.message())
        finally:
            client.close()


# --- hard limits -----------------------------------------------------------------------------


def _bytes_model() -> bytes:
    """Identity over a STRING (BYTES) input [batch, 1]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["t"])],
        "echo",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch", 1])],
    )
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


@pytest.fixture(scope="module")
def bounded(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> Iterator[triton.InferenceServerClient]:
    root = tmp_path_factory.mktemp("bounded")
    write_model(root / "models", "a", {1: add_constant_model(1.0)}, "max_batch_size: 64\n")
    write_model(root / "models", "echo", {1: _bytes_model()}, CONFIG)
    flags = [
        "--max-batch-rows", "4",
        "--max-element-bytes", "16",
        "--max-metadata-bytes", "4096",
        "--max-message-bytes", "65536",
    ]  # fmt: skip
    with start_server(root / "models", *flags) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        yield client
        client.close()


def _fp32(rows: int) -> list[triton.InferInput]:
    x = triton.InferInput("x", [rows, 2], "FP32")
    x.set_data_from_numpy(np.zeros((rows, 2), np.float32))
    return [x]


def _refusal(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), str(info.value.message())


def test_batch_rows_just_under_and_over(bounded: triton.InferenceServerClient) -> None:
    assert bounded.infer("a", _fp32(4)).as_numpy("y").shape == (4, 2)
    assert _refusal(lambda: bounded.infer("a", _fp32(5))) == (
        "StatusCode.INVALID_ARGUMENT",
        "input 'x': 5 rows exceed the limit of 4 (--max-batch-rows)",
    )


def test_bytes_element_length_just_under_and_over(bounded: triton.InferenceServerClient) -> None:
    def strings(length: int) -> list[triton.InferInput]:
        s = triton.InferInput("s", [1, 1], "BYTES")
        s.set_data_from_numpy(np.array([[b"z" * length]], dtype=object))
        return [s]

    assert bounded.infer("echo", strings(16)).as_numpy("t").tolist() == [[b"z" * 16]]
    assert _refusal(lambda: bounded.infer("echo", strings(17))) == (
        "StatusCode.INVALID_ARGUMENT",
        "input 's': a BYTES element of 17 bytes exceeds the limit of 16 (--max-element-bytes)",
    )


def test_metadata_size_just_under_and_over(bounded: triton.InferenceServerClient) -> None:
    assert bounded.is_server_live(headers={"x-pad": "p" * 3000})
    status, message = _refusal(lambda: bounded.is_server_live(headers={"x-pad": "p" * 4096}))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"
    assert "metadata size exceeds hard limit" in message and "vs. 4096" in message


def test_message_size_just_under_and_over(bounded: triton.InferenceServerClient) -> None:
    """--max-message-bytes 65536: a 60,000-byte input gets past the transport (and is then
    refused by the model, whose input is [batch, 2]); a 65,536-byte one, with the message's
    framing on top, does not."""

    def request(length: int) -> list[triton.InferInput]:
        x = triton.InferInput("x", [1, length // 4], "FP32")
        x.set_data_from_numpy(np.zeros((1, length // 4), np.float32))
        return [x]

    status, message = _refusal(lambda: bounded.infer("a", request(60_000)))
    assert status == "StatusCode.INVALID_ARGUMENT" and "does not match" in message
    status, message = _refusal(lambda: bounded.infer("a", request(65_536)))
    assert status == "StatusCode.RESOURCE_EXHAUSTED"
    assert "65536" in message
