"""Traces on an in-process server: the span of one request whose parent is an incoming W3C
traceparent, its queue and execution events, the batch span and its links, log lines
carrying the span's trace id, and nothing traced at the defaults."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc.telemetry import TelemetryInterceptor
from server.app import InferenceServer
from server.settings import Settings
from server.telemetry.logs import ACCESS, JsonFormatter

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
UNSAMPLED = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-00"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
BURST = 24


def _request(rows: int = 2) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="double", id="req-7")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(np.ones((rows, 4), np.float32).tobytes())
    return request


class Lines(logging.Handler):
    """The access log's lines, formatted as the server writes them."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(ACCESS)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest_asyncio.fixture
async def traced(
    double_repository: Path,
) -> AsyncIterator[tuple[pb_grpc.GRPCInferenceServiceStub, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    settings = Settings(
        model_repository=double_repository,
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=1.0,
        access_log_sample=1.0,
    )
    server = InferenceServer(settings, span_exporter=exporter)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel), exporter
    finally:
        await channel.close()
        await server.stop()


async def _finished(exporter: InMemorySpanExporter, rpcs: int) -> tuple[ReadableSpan, ...]:
    """The spans once `rpcs` RPC spans have ended: the server ends an RPC's span as its
    handler unwinds, which may be just after the client has the answer."""
    for _ in range(200):
        spans = exporter.get_finished_spans()
        if sum(s.kind == SpanKind.SERVER for s in spans) >= rpcs:
            return spans
        await asyncio.sleep(0.01)
    raise AssertionError(f"{rpcs} RPC spans did not end; finished: {spans}")


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_span_tree_of_one_request(
    traced: tuple[pb_grpc.GRPCInferenceServiceStub, InMemorySpanExporter], access_lines: Lines
) -> None:
    stub, exporter = traced
    await stub.ModelInfer(_request(rows=2), metadata=(("traceparent", TRACEPARENT),))
    spans = _by_name(await _finished(exporter, 1))
    assert sorted(spans) == [METHOD, "inference.batch"]
    (rpc,) = spans[METHOD]
    assert rpc.kind == SpanKind.SERVER
    assert rpc.context is not None and rpc.parent is not None
    assert rpc.context.trace_id == TRACE_ID  # the incoming trace, continued
    assert rpc.parent.span_id == PARENT_ID and rpc.parent.is_remote
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.system"] == "grpc"
    assert rpc.attributes["rpc.method"] == "ModelInfer"
    assert rpc.attributes["rpc.grpc.status_code"] == 0
    assert (rpc.attributes["model"], rpc.attributes["version"]) == ("double", 1)

    (batch,) = spans["inference.batch"]
    assert batch.parent is None  # a batch is a root: it serves many traces
    assert batch.context is not None
    assert dict(batch.attributes or {}) == {
        "model": "double",
        "version": 1,
        "inference.batch.size": 2,
        "inference.batch.requests": 1,
    }
    assert [link.context.span_id for link in batch.links] == [rpc.context.span_id]
    assert batch.status.status_code == StatusCode.OK

    queued, executed = rpc.events
    assert (queued.name, executed.name) == ("inference.queue", "inference.execute")
    assert rpc.start_time is not None and rpc.end_time is not None
    assert batch.start_time is not None and batch.end_time is not None
    # The queue wait ends as the batch starts; the execution ends with it.
    assert rpc.start_time <= queued.timestamp == batch.start_time
    assert executed.timestamp == batch.end_time <= rpc.end_time
    waited = dict(queued.attributes or {})["inference.queue.duration"]
    assert isinstance(waited, float) and 0 <= waited < 1
    execute = dict(executed.attributes or {})
    assert execute["inference.compute.duration"] == pytest.approx(
        (batch.end_time - batch.start_time) / 1e9
    )
    assert (execute["inference.batch.size"], execute["inference.batch.requests"]) == (2, 1)
    assert execute["inference.batch.trace_id"] == f"{batch.context.trace_id:032x}"
    assert execute["inference.batch.span_id"] == f"{batch.context.span_id:016x}"

    (line,) = access_lines.lines
    record = json.loads(line)
    assert record["trace_id"] == f"{TRACE_ID:032x}"
    assert (record["model"], record["version"], record["request_id"]) == ("double", "1", "req-7")
    assert record["status"] == "OK" and record["duration_ms"] > 0


async def test_a_batch_links_every_request_it_served(
    traced: tuple[pb_grpc.GRPCInferenceServiceStub, InMemorySpanExporter],
) -> None:
    """The test config's 2 ms queue delay lets a burst share batches."""
    stub, exporter = traced
    await asyncio.gather(*(stub.ModelInfer(_request(rows=1)) for _ in range(BURST)))
    spans = _by_name(await _finished(exporter, BURST))
    rpcs = {s.context.span_id for s in spans[METHOD] if s.context is not None}
    assert len(rpcs) == BURST
    linked = [link.context.span_id for b in spans["inference.batch"] for link in b.links]
    assert sorted(linked) == sorted(rpcs)  # each request in exactly one batch
    named = {
        dict(e.attributes or {})["inference.batch.span_id"]
        for s in spans[METHOD]
        for e in s.events
        if e.name == "inference.execute"
    }
    assert named == {f"{b.context.span_id:016x}" for b in spans["inference.batch"] if b.context}
    sizes = [dict(b.attributes or {})["inference.batch.size"] for b in spans["inference.batch"]]
    assert sum(sizes) == BURST and max(sizes) > 1  # batched, and every row accounted for


async def test_an_unsampled_parent_is_followed(
    traced: tuple[pb_grpc.GRPCInferenceServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = traced
    await stub.ModelInfer(_request(), metadata=(("traceparent", UNSAMPLED),))
    await stub.ModelInfer(_request(), metadata=(("traceparent", TRACEPARENT),))
    spans = await _finished(exporter, 1)  # the sampled one: the unsampled one made none
    assert len([s for s in spans if s.kind == SpanKind.SERVER]) == 1


async def test_failed_request_span_has_the_status(
    traced: tuple[pb_grpc.GRPCInferenceServiceStub, InMemorySpanExporter],
) -> None:
    stub, exporter = traced
    request = _request()
    request.inputs[0].shape[:] = [2, 5]
    request.raw_input_contents[0] = np.ones((2, 5), np.float32).tobytes()
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ModelInfer(request, metadata=(("traceparent", TRACEPARENT),))
    (rpc,) = await _finished(exporter, 1)  # refused before queueing: no batch
    assert not [e.name for e in rpc.events if e.name.startswith("inference.")]
    assert rpc.attributes is not None
    assert rpc.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # The RPC semantic conventions: a server span's status stays unset for the client's
    # own errors (INVALID_ARGUMENT), and is ERROR only for the server's (INTERNAL, ...).
    assert rpc.status.status_code == StatusCode.UNSET


async def test_defaults_create_no_spans(double_repository: Path) -> None:
    server = InferenceServer(Settings(model_repository=double_repository, grpc_port=0))
    assert server.tracing is None
    assert [type(i) for i in server.interceptors] == [TelemetryInterceptor]
