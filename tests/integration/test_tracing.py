"""Traces and logs from a real server process: spans reach an OTLP/gRPC receiver the test
runs, under the trace id of the traceparent the client sent; every log line is JSON, and
the access log's lines carry that same trace id."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from processes import ServerProcess, start_server, stop_process
from tritonclient.grpc import service_pb2, service_pb2_grpc

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
METHOD = "/inference.GRPCInferenceService/ModelInfer"

Writer = Callable[[Path, str, dict[int, bytes], str], Path]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC collector: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.resources: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                self.resources.append(attributes)
                for scope in resource_spans.scope_spans:
                    self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait_for(self, name: str, timeout_s: float = 30.0) -> list[trace_pb2.Span]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = [s for s in self.spans if s.name == name]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no span {name!r} arrived; got {[s.name for s in self.spans]}")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(0)


def _infer(server: ServerProcess, metadata: tuple[tuple[str, str], ...] = ()) -> None:
    with grpc.insecure_channel(server.grpc_address) as channel:
        message = service_pb2.ModelInferRequest(model_name="add", id="r-1")
        message.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        message.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            message, metadata=metadata, timeout=30
        )


def test_spans_reach_an_otlp_receiver_and_logs_carry_the_trace_id(
    tmp_path: Path,
    write_model: Writer,
    add_constant_model: Callable[[float], bytes],
    receiver: tuple[Receiver, int],
) -> None:
    collector, port = receiver
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    flags = ("--trace-exporter", "otlp", "--trace-otlp-endpoint", f"http://127.0.0.1:{port}")
    with start_server(tmp_path, *flags, "--access-log-sample", "1") as server:
        assert server.start_line["trace_exporter"] == "otlp"
        _infer(server, (("traceparent", TRACEPARENT),))
        (rpc,) = collector.wait_for(METHOD)
        (batch,) = collector.wait_for("inference.batch")
    assert rpc.trace_id.hex() == TRACE_ID
    assert rpc.parent_span_id.hex() == PARENT_ID
    assert rpc.kind == trace_pb2.Span.SPAN_KIND_SERVER
    events = {e.name: {a.key: a.value for a in e.attributes} for e in rpc.events}
    assert {"inference.queue", "inference.execute"} <= events.keys()
    execute = events["inference.execute"]
    assert execute["inference.batch.size"].int_value == 1
    assert execute["inference.batch.span_id"].string_value == batch.span_id.hex()
    assert [(link.trace_id, link.span_id) for link in batch.links] == [(rpc.trace_id, rpc.span_id)]
    assert {"service.name": "v2-inference-server"}.items() <= collector.resources[0].items()

    records = [json.loads(line) for line in server.log_lines]  # every line is one JSON object
    (access,) = [r for r in records if r.get("event") == "access"]
    assert access["trace_id"] == TRACE_ID == rpc.trace_id.hex()
    assert (access["model"], access["version"], access["request_id"]) == ("add", "1", "r-1")
    assert access["status"] == "OK"
    assert access["method"] == METHOD[1:]
    assert {"ts", "level", "logger", "message"} <= access.keys()


def test_without_tracing_the_access_log_takes_the_incoming_trace_id(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with start_server(tmp_path, "--access-log-sample", "1") as server:
        assert server.start_line["trace_exporter"] == "none"
        _infer(server, (("traceparent", TRACEPARENT),))
        _infer(server)
        time.sleep(0.2)  # the access line is written as the RPC unwinds
    records = [json.loads(line) for line in server.log_lines]
    access = [r for r in records if r.get("event") == "access"]
    assert [r["trace_id"] for r in access] == [TRACE_ID, ""]
    assert all("span_id" not in r for r in records)  # no spans exist to name


def test_the_access_log_is_off_by_default(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with start_server(tmp_path) as server:
        for _ in range(5):
            _infer(server)
    records = [json.loads(line) for line in server.log_lines]
    assert [r for r in records if r.get("event") == "access"] == []
    events = [r.get("event") for r in records]
    assert "listening" in events and "model_state" in events and "stopped" in events


def test_an_unreachable_collector_does_not_hold_up_shutdown(
    tmp_path: Path, write_model: Writer, add_constant_model: Callable[[float], bytes]
) -> None:
    """Spans for a collector that never answers are given up after 5 s, not retried for
    as long as the exporter would; the server still stops cleanly."""
    write_model(tmp_path, "add", {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    flags = ("--trace-exporter", "otlp", "--trace-otlp-endpoint", f"http://127.0.0.1:{port}")
    with start_server(tmp_path, *flags, "--shutdown-grace-s", "1") as server:
        _infer(server, (("traceparent", TRACEPARENT),))
        started = time.monotonic()
        assert stop_process(server.process, timeout=30) == 0
        took = time.monotonic() - started
    assert took < 1 + 5 + 3, took  # grace, the flush bound, and some slack for a busy machine
