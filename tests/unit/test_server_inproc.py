"""No mix-ups under load: the real grpc.aio server and real ONNX Runtime, in process.

1,000 requests, each with distinct input and a distinct number of rows, go out at once;
each must get exactly its own output and id back, and the statistics must show that
they were batched. The model is `double` (conftest): y = x * 2 + 1, x of shape [batch, 4].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from inference import grpc_service_pb2 as pb
from inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub as Stub

MODEL = "double"
WIDTH = 4
REQUESTS = 1000

LOOPS = ("asyncio", "uvloop")  # the server runs on uvloop; the tests on both loops
pytestmark = pytest.mark.timeout(60)


def _rows(index: int) -> int:
    return 1 + index % 3


def _input(index: int) -> np.ndarray:
    """Distinct values per request: row r of request i holds i * 16 + r * 4 + 0..3."""
    rows = _rows(index)
    start = index * 16
    return np.arange(start, start + rows * WIDTH, dtype=np.float32).reshape(rows, WIDTH)


def _request(index: int) -> pb.ModelInferRequest:
    """Even requests send raw contents, odd ones typed contents."""
    x = _input(index)
    request = pb.ModelInferRequest(model_name=MODEL, id=f"req-{index}")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    if index % 2 == 0:
        request.raw_input_contents.append(x.tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    return request


def _check(index: int, response: pb.ModelInferResponse) -> None:
    expected = _input(index) * 2 + 1
    assert response.id == f"req-{index}"
    assert response.model_name == MODEL
    assert response.model_version == "1"
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", "FP32", [*expected.shape])
    if index % 2 == 0:
        [raw] = response.raw_output_contents
        got = np.frombuffer(raw, dtype=np.float32).reshape(expected.shape)
    else:
        assert not response.raw_output_contents
        got = np.array(output.contents.fp32_contents, dtype=np.float32).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)


async def _statistics(stub: Stub) -> pb.ModelStatistics:
    reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL))
    [stats] = reply.model_stats
    return stats


def _assert_batched(stats: pb.ModelStatistics, requests: int, rows: int) -> None:
    """Batching happened, and the per-batch-size entries add up to the totals."""
    assert stats.inference_count == rows
    assert stats.inference_stats.success.count == requests
    assert stats.inference_stats.fail.count == 0
    assert stats.execution_count < requests
    assert all(1 <= entry.batch_size <= 16 for entry in stats.batch_stats)
    assert sum(entry.compute_infer.count for entry in stats.batch_stats) == stats.execution_count
    assert sum(entry.batch_size * entry.compute_infer.count for entry in stats.batch_stats) == rows
    assert any(entry.batch_size > 3 for entry in stats.batch_stats)


async def test_concurrent_unary_requests_each_get_their_own_output(stub: Stub) -> None:
    responses = await asyncio.gather(*(stub.ModelInfer(_request(i)) for i in range(REQUESTS)))
    for index, response in enumerate(responses):
        _check(index, response)
    rows = sum(_rows(i) for i in range(REQUESTS))
    _assert_batched(await _statistics(stub), REQUESTS, rows)


async def test_one_stream_of_requests_each_get_their_own_output(stub: Stub) -> None:
    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        for index in range(REQUESTS):
            yield _request(index)

    by_id: dict[str, pb.ModelInferResponse] = {}
    async for reply in stub.ModelStreamInfer(requests()):
        assert reply.error_message == ""
        assert reply.infer_response.id not in by_id
        by_id[reply.infer_response.id] = reply.infer_response
    assert len(by_id) == REQUESTS
    for index in range(REQUESTS):
        _check(index, by_id[f"req-{index}"])
    rows = sum(_rows(i) for i in range(REQUESTS))
    _assert_batched(await _statistics(stub), REQUESTS, rows)


async def test_a_bad_request_on_a_stream_fails_alone(stub: Stub) -> None:
    bad = 50
    count = 100

    def bad_request() -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=MODEL, id="bad")
        request.inputs.add(name="x", datatype="INT32", shape=[1, WIDTH])
        request.raw_input_contents.append(np.zeros((1, WIDTH), dtype=np.int32).tobytes())
        return request

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        for index in range(count):
            yield bad_request() if index == bad else _request(index)

    by_id: dict[str, pb.ModelStreamInferResponse] = {}
    async for reply in stub.ModelStreamInfer(requests()):
        by_id[reply.infer_response.id] = reply
    assert len(by_id) == count
    failed = by_id.pop("bad")
    assert failed.error_message == "input 'x': datatype INT32 does not match the model's FP32"
    assert failed.infer_response.parameters["error_code"].string_param == "INVALID_ARGUMENT"
    assert failed.infer_response.model_name == MODEL
    for index in range(count):
        if index != bad:
            assert by_id[f"req-{index}"].error_message == ""
            _check(index, by_id[f"req-{index}"].infer_response)


async def test_a_stream_survives_an_unknown_model_and_keeps_serving(stub: Stub) -> None:
    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        yield pb.ModelInferRequest(model_name="nope", id="lost")
        yield _request(7)

    replies = [reply async for reply in stub.ModelStreamInfer(requests())]
    by_id = {reply.infer_response.id: reply for reply in replies}
    assert by_id["lost"].error_message == "unknown model 'nope'"
    assert by_id["lost"].infer_response.parameters["error_code"].string_param == "NOT_FOUND"
    assert by_id["req-7"].error_message == ""
    _check(7, by_id["req-7"].infer_response)


async def test_unary_errors_carry_the_mapped_status(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.ModelInfer(pb.ModelInferRequest(model_name="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "unknown model 'nope'"

    request = _request(0)
    request.inputs[0].shape[:] = [17, WIDTH]
    request.raw_input_contents[0] = np.zeros((17, WIDTH), dtype=np.float32).tobytes()
    with pytest.raises(grpc.aio.AioRpcError) as too_big:
        await stub.ModelInfer(request)
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert too_big.value.details() == (
        "input 'x': batch size 17 is outside 1..16 (max_batch_size of model 'double')"
    )

    with pytest.raises(grpc.aio.AioRpcError) as escape:
        await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=".."))
    assert escape.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert escape.value.details() == (
        "model name '..' must name a directory directly inside the repository"
    )


# --- BYTES and ONNX string inputs ------------------------------------------------------------


def _text_request(items: list[bytes], raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="echo", id="t")
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=[len(items), 1])
    if raw:
        request.raw_input_contents.append(
            b"".join(len(item).to_bytes(4, "little") + item for item in items)
        )
    else:
        tensor.contents.bytes_contents.extend(items)
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
async def test_utf8_bytes_reach_a_string_input_as_text_and_come_back(
    text_stub: Stub, raw: bool
) -> None:
    items = ["\u00e9t\u00e9".encode(), b"", b"plain"]
    response = await text_stub.ModelInfer(_text_request(items, raw))
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("out", "BYTES", [3, 1])
    if raw:
        [content] = response.raw_output_contents
        assert content == b"".join(len(i).to_bytes(4, "little") + i for i in items)
    else:
        assert list(output.contents.bytes_contents) == items


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
async def test_bytes_that_are_not_utf8_are_refused_by_a_string_input(
    text_stub: Stub, raw: bool
) -> None:
    # The codec keeps BYTES as bytes; the ONNX runtime, which needs text, refuses them.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await text_stub.ModelInfer(_text_request([b"ok", b"\xff\xfe"], raw))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        "input 'text': BYTES elements must be UTF-8 text for this model's string input"
    )
