"""Traces: a server span per RPC, and spans for queueing and batch execution.

Off by default: with `--trace-exporter none` no tracer provider exists, no tracing
interceptor is installed and the batchers get no observer, so no span is ever created.

With an exporter (`otlp`: OTLP over gRPC; `console`: one JSON object per line on
standard output), each RPC gets a SERVER span from opentelemetry-instrumentation-grpc
(installed by the gRPC face with `provider`), whose parent is the W3C `traceparent` the
client (or Envoy) sent. Sampling is parent-based: a sampled parent is always followed,
and a root is sampled with `--trace-sample-ratio`.

When a traced request's batch ends, the batcher's observer adds two events to its RPC
span, with the batcher's own timestamps:

    inference.queue     when its batch left the queue; inference.queue.duration (s)
    inference.execute   when the batch finished; inference.compute.duration (s),
                        inference.batch.size (rows), inference.batch.requests, and the
                        batch span's inference.batch.trace_id and .span_id

and each execution that served a traced request gets one `inference.batch` span, a root
of its own trace that links the RPC span of every traced request it served (model,
version, inference.batch.size, inference.batch.requests). Batch spans are always recorded
when they exist (their own provider samples everything), so a request never names a batch
span that was dropped.

Events rather than child spans: creating an event costs about a quarter of creating a
span, and it travels inside its span, where each child span is one more span to encode and
export (docs/observability.md, "Figures"). A stream's requests all add events to the
stream's one span, which the SDK caps (128 events by default, OTEL_SPAN_EVENT_COUNT_LIMIT).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanProcessor,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from server.core.errors import InferenceError

SCOPE = "server"
EXPORTERS = ("none", "otlp", "console")
FLUSH_TIMEOUT_MS = 5_000


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def exporter_for(kind: str, otlp_endpoint: str = "") -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stdout, formatter=_one_line)
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if not otlp_endpoint:
            return OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_*ENDPOINT, or localhost:4317
        insecure = not otlp_endpoint.startswith("https://")
        return OTLPSpanExporter(endpoint=otlp_endpoint, insecure=insecure)
    raise ValueError(f"unknown trace exporter {kind!r}; expected one of {EXPORTERS}")


class Tracing:
    """The tracer providers of one server process, and what the server wires from them.

    `synchronous`: export each span as it ends (tests); otherwise in batches, off the
    request path, from the SDK's export thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        sample_ratio: float,
        resource: Resource,
        synchronous: bool = False,
    ) -> None:
        self._processor: SpanProcessor = (
            SimpleSpanProcessor(exporter) if synchronous else BatchSpanProcessor(exporter)
        )
        self.provider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=resource,
            shutdown_on_exit=False,  # `shutdown` is a bounded step of the server's stop
        )
        self.provider.add_span_processor(self._processor)
        self._batch_provider = TracerProvider(
            sampler=ALWAYS_ON, resource=resource, shutdown_on_exit=False
        )
        self._batch_provider.add_span_processor(self._processor)
        self._batch_tracer = self._batch_provider.get_tracer(SCOPE)

    def observer(self, model: str, version: int) -> BatchTracer:
        return BatchTracer(self._batch_tracer, model, version)

    def shutdown(self, timeout_s: float = FLUSH_TIMEOUT_MS / 1000) -> bool:
        """Export what is buffered and stop the export thread, within `timeout_s`; False
        if that did not finish (an unreachable collector retries for longer), in which
        case the spans still buffered are lost with the process."""
        done = threading.Event()

        def stop() -> None:
            self._processor.force_flush(int(timeout_s * 1000))
            self.provider.shutdown()
            self._batch_provider.shutdown()
            done.set()

        threading.Thread(target=stop, name="trace-shutdown", daemon=True).start()
        return done.wait(timeout_s)


@dataclass(slots=True)
class BatchTracer:
    """The batcher's observer for one model version (`core.observers.BatchObserver`)."""

    batch_tracer: trace.Tracer
    model: str
    version: int
    offset_ns: int = 0  # time_ns - perf_counter_ns: the batcher's clock to span time

    def __post_init__(self) -> None:
        self.offset_ns = time.time_ns() - time.perf_counter_ns()

    def capture(self) -> object | None:
        span = trace.get_current_span()
        if not span.is_recording():
            return None
        span.set_attribute("model", self.model)
        span.set_attribute("version", self.version)
        return span

    def executed(
        self,
        tokens: Sequence[object | None],
        arrived_ns: Sequence[int],
        dispatched_ns: int,
        finished_ns: int,
        rows: int,
        error: BaseException | None,
    ) -> None:
        traced = [(t, a) for t, a in zip(tokens, arrived_ns, strict=True) if t is not None]
        if not traced:
            return
        offset = self.offset_ns
        start, end = dispatched_ns + offset, finished_ns + offset
        attributes: dict[str, str | int] = {
            "model": self.model,
            "version": self.version,
            "inference.batch.size": rows,
            "inference.batch.requests": len(tokens),
        }
        status = Status(StatusCode.OK) if error is None else _error_status(error)
        batch = self.batch_tracer.start_span(
            "inference.batch",
            context=Context(),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=[Link(t.get_span_context()) for t, _ in traced],  # type: ignore[attr-defined]
            start_time=start,
        )
        batch.set_status(status)
        batch.end(end)
        context = batch.get_span_context()
        execute_attributes: dict[str, str | int | float] = {
            "inference.compute.duration": (finished_ns - dispatched_ns) / 1e9,
            "inference.batch.size": rows,
            "inference.batch.requests": len(tokens),
            "inference.batch.trace_id": format(context.trace_id, "032x"),
            "inference.batch.span_id": format(context.span_id, "016x"),
        }
        if error is not None:
            execute_attributes["error.type"] = _error_status(error).description or "error"
        for token, arrived in traced:
            span: trace.Span = token  # type: ignore[assignment]
            waited = {"inference.queue.duration": (dispatched_ns - arrived) / 1e9}
            span.add_event("inference.queue", waited, start)
            span.add_event("inference.execute", execute_attributes, end)


def _error_status(error: BaseException) -> Status:
    reason = error.reason if isinstance(error, InferenceError) else type(error).__name__
    return Status(StatusCode.ERROR, reason)
