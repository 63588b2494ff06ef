"""Hostile and careless clients: bytes that are not a request, absurd BYTES bodies, and a
stream client that never reads its replies. Each gets a specific status (never INTERNAL
or UNKNOWN) and leaves no traceback in the log, and the server keeps serving.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper
from processes import ServerProcess, start_server
from traffic import output, raw_fp32_request, rss_bytes, wait_until
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
SERVICE = "/inference.GRPCInferenceService/"
NOT_A_REQUEST = "the request is not a valid inference.ModelInferRequest"
MiB = 1024 * 1024
WIDTH = 2048  # wide: 8 KiB per request row, so that unread streams would add up quickly
STREAM_LIMIT = 64


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: WriteModel,
    add_constant_model: Callable[[float], bytes],
    onnx_model: Callable[..., bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("hardening")
    write_model(root, "add", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    echo = onnx_model(
        [helper.make_node("Identity", ["text"], ["out"])],
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["batch", 1])],
    )
    write_model(root, "echo", {1: echo}, "max_batch_size: 8\n")
    wide = onnx_model(
        [helper.make_node("Identity", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
    )
    write_model(root, "wide", {1: wide}, "max_batch_size: 8\n")
    with start_server(
        root,
        *("--max-message-bytes", str(72 * MiB)),  # room for the 64 MiB body below
        *("--max-stream-requests", str(STREAM_LIMIT)),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.grpc_address, options=[("grpc.max_receive_message_length", 72 * MiB)]
    ) as opened:
        grpc.channel_ready_future(opened).result(timeout=30)
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Stub:
    return Stub(channel)


X = np.array([[1.0, 2.0]], np.float32)


def valid_request() -> service_pb2.ModelInferRequest:
    return raw_fp32_request("add", "x", X)


def assert_serves(stub: Stub) -> None:
    response = stub.ModelInfer(valid_request(), timeout=30)
    np.testing.assert_array_equal(output(response, "y", np.float32), X + 1.0)


def raw_call(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
    """A unary call that sends bytes as they are and returns the reply's bytes."""
    return channel.unary_unary(SERVICE + method)


def status_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), str(error.details())  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def log_problems(server: ServerProcess) -> list[str]:
    """Log lines with a traceback, at ERROR or above, or not JSON at all."""
    bad = ("Traceback", '"exception"', '"level": "ERROR"', '"level": "CRITICAL"')
    return [
        line
        for line in list(server.log_lines)
        if not line.startswith("{") or any(mark in line for mark in bad)
    ]


# --- bytes that are not a request -----------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def malformed(rng: np.random.Generator) -> bytes:
    """Bytes that no protobuf parser accepts: each ends in a defect, after an optional
    valid prefix (a real request, or random well-formed string fields)."""
    field = int(rng.integers(1, 16))
    defects = [
        _varint(field << 3)
        + bytes([0x80 | int(b) for b in rng.integers(0, 128, rng.integers(1, 9))]),
        _varint(field << 3 | 2)
        + _varint(int(rng.integers(10, 1 << 20)))
        + rng.bytes(int(rng.integers(0, 9))),
        _varint(field << 3 | int(rng.choice([6, 7]))) + rng.bytes(int(rng.integers(0, 9))),
        bytes([int(rng.choice([0, 1, 2, 5]))]) + rng.bytes(int(rng.integers(0, 4))),  # field 0
        _varint(field << 3 | 4),  # an end-group with no group
        b"\x0a\x02\xff\xfe",  # model_name that is not UTF-8
        b"\x2a\x04\x12\x02\xc3\x28",  # inputs[].datatype that is not UTF-8
        b"\x2a" + _varint(5) + b"\x18\xff\xff\xff\xff",  # inputs[].shape: a truncated varint
    ]
    defect = defects[int(rng.integers(len(defects)))]
    prefix = b""
    kind = int(rng.integers(3))
    if kind == 1:
        prefix = valid_request().SerializeToString()
    elif kind == 2:
        text = rng.integers(97, 123, int(rng.integers(0, 40))).astype(np.uint8).tobytes()
        prefix = b"\x1a" + _varint(len(text)) + text  # id
    return prefix + defect


def test_bytes_that_do_not_parse_get_invalid_argument_and_no_traceback(
    server: ServerProcess, channel: grpc.Channel, stub: Stub
) -> None:
    rng = np.random.default_rng(2024)
    infer = raw_call(channel, "ModelInfer")
    cases = [malformed(rng) for _ in range(200)]
    for data in cases:
        with pytest.raises(DecodeError):
            service_pb2.ModelInferRequest.FromString(data)
    answers = [status_of(lambda data=data: infer(data, timeout=30)) for data in cases]  # type: ignore[misc]
    wrong = [
        (d, a)
        for d, a in zip(cases, answers, strict=True)
        if a != (grpc.StatusCode.INVALID_ARGUMENT, NOT_A_REQUEST)
    ]
    assert wrong == [], wrong[:5]
    assert_serves(stub)
    assert log_problems(server) == []
    refused = [e for e in server.logs() if e["message"] == "malformed requests refused"]
    assert 1 <= len(refused) <= 3, refused  # rate-limited: one line per 10 s
    assert refused[0]["level"] == "WARNING"
    assert refused[0]["message_type"] == "inference.ModelInferRequest"


def test_random_bytes_get_a_specific_status(
    server: ServerProcess, channel: grpc.Channel, stub: Stub
) -> None:
    """Random bytes sometimes parse (as unknown fields, say): then any specific status is
    fine, but never INTERNAL or UNKNOWN; when they do not parse, INVALID_ARGUMENT."""
    rng = np.random.default_rng(7)
    infer = raw_call(channel, "ModelInfer")
    parsed = 0
    for _ in range(100):
        data = rng.bytes(int(rng.integers(1, 200)))
        code, message = status_of(lambda data=data: infer(data, timeout=30))  # type: ignore[misc]
        try:
            service_pb2.ModelInferRequest.FromString(data)
        except DecodeError:
            assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, NOT_A_REQUEST)
        else:
            parsed += 1
            assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), message
            assert message, code
    assert parsed < 100
    assert_serves(stub)
    assert log_problems(server) == []


@pytest.mark.parametrize(
    ("method", "type_name"),
    [
        ("ServerLive", "ServerLiveRequest"),
        ("ServerReady", "ServerReadyRequest"),
        ("ModelReady", "ModelReadyRequest"),
        ("ServerMetadata", "ServerMetadataRequest"),
        ("ModelMetadata", "ModelMetadataRequest"),
        ("ModelConfig", "ModelConfigRequest"),
        ("ModelStatistics", "ModelStatisticsRequest"),
        ("RepositoryIndex", "RepositoryIndexRequest"),
        ("RepositoryModelLoad", "RepositoryModelLoadRequest"),
        ("RepositoryModelUnload", "RepositoryModelUnloadRequest"),
    ],
)
def test_every_unary_rpc_refuses_bytes_that_do_not_parse(
    channel: grpc.Channel, method: str, type_name: str
) -> None:
    answer = status_of(lambda: raw_call(channel, method)(b"\x0a\x05ab", timeout=30))
    assert answer == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid inference.{type_name}",
    )


# --- streams ---------------------------------------------------------------------------------


def test_a_malformed_message_on_a_stream_gets_an_error_reply_and_the_stream_stays_open(
    channel: grpc.Channel,
) -> None:
    stream = channel.stream_stream(
        SERVICE + "ModelStreamInfer",
        response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
    )
    outgoing: queue.Queue[bytes | None] = queue.Queue()
    replies = stream(iter(outgoing.get, None), timeout=60)

    def request(request_id: str) -> bytes:
        message = valid_request()
        message.id = request_id
        return message.SerializeToString()

    outgoing.put(request("first"))
    first = next(replies)
    assert (first.error_message, first.infer_response.id) == ("", "first")
    outgoing.put(b"\x08\xff\xff")  # a truncated varint
    error = next(replies)
    assert error.error_message == NOT_A_REQUEST
    assert error.infer_response.parameters["error_code"].string_param == "INVALID_ARGUMENT"
    outgoing.put(request("after"))  # the same stream still answers
    after = next(replies)
    assert (after.error_message, after.infer_response.id) == ("", "after")
    np.testing.assert_array_equal(output(after.infer_response, "y", np.float32), X + 1.0)
    outgoing.put(None)
    assert list(replies) == []
    assert replies.code() == grpc.StatusCode.OK


def test_raw_bytes_of_zero_length_prefixes_fail_fast(stub: Stub) -> None:
    """Shape [1] with 64 MiB of zero-length elements: the decoder stops at the second."""
    request = service_pb2.ModelInferRequest(model_name="echo")
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(bytes(64 * MiB))
    code, message = status_of(lambda: stub.ModelInfer(request, timeout=60))
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text': raw content holds more than the 1 BYTES elements that shape [1] declares",
    )
    assert_serves(stub)


def test_a_stream_client_that_never_reads_cannot_grow_the_server(
    server: ServerProcess, stub: Stub
) -> None:
    """--max-stream-requests 64: the server stops reading the stream, HTTP/2 flow control
    stops the client's writes, and the server's memory stays where it was.

    Unbounded, the 20,000 requests of 8 KiB would take 160 MiB of requests alone, plus as
    much again in replies. "The writes block" is observed as the number of requests the
    client has handed to grpc standing still while far below 20,000."""
    total = 20_000
    x = np.arange(WIDTH, dtype=np.float32)[None]
    request = raw_fp32_request("wide", "x", x)
    pulled = 0

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        nonlocal pulled
        for _ in range(total):
            pulled += 1
            yield request

    # A well-behaved stream first: everything is answered, past the limit, and the
    # server's memory has grown to its working size.
    answered = list(stub.ModelStreamInfer(iter([request] * 500), timeout=60))
    assert len(answered) == 500 and not any(r.error_message for r in answered)
    baseline = rss_bytes(server.process.pid)

    call = stub.ModelStreamInfer(requests(), timeout=120)
    try:
        settled = _stands_still(lambda: pulled, timeout=60, still_for=1.5)
        grown = rss_bytes(server.process.pid) - baseline
    finally:
        call.cancel()
    assert settled < total, "the client wrote every request: nothing pushed back"
    assert settled > STREAM_LIMIT  # the server did read, up to its limit and buffers
    assert grown < 48 * MiB, f"server RSS grew by {grown / MiB:.1f} MiB"
    assert call.code() == grpc.StatusCode.CANCELLED
    assert_serves(stub)
    assert log_problems(server) == []


def _stands_still(count: Callable[[], int], timeout: float, still_for: float) -> int:
    """Wait until `count()` has not changed for `still_for` seconds; return it."""
    last, since = count(), time.monotonic()

    def settled() -> bool:
        nonlocal last, since
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        return now > 0 and time.monotonic() - since >= still_for

    wait_until(settled, timeout, "the client's writes to stop", interval=0.05)
    return last


def test_stream_backpressure_does_not_stall_a_client_that_reads(stub: Stub) -> None:
    """Far more requests than the limit, read as they come: every one is answered."""
    results: list[service_pb2.ModelStreamInferResponse] = []

    def requests() -> Iterator[service_pb2.ModelInferRequest]:
        for n in range(1000):
            message = valid_request()
            message.id = str(n)
            yield message

    reader = threading.Thread(
        target=lambda: results.extend(stub.ModelStreamInfer(requests(), timeout=120))
    )
    reader.start()
    reader.join(120)
    assert not reader.is_alive()
    assert sorted(int(r.infer_response.id) for r in results) == list(range(1000))
    assert not any(r.error_message for r in results)
