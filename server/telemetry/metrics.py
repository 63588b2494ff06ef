"""Metrics through the OpenTelemetry SDK, exported in the Prometheus text format.

Nothing is recorded on the request path for the metrics: every instrument reads, at
scrape time, the counters the server keeps anyway (`core.statistics.ModelStats`, the
batchers' `BatcherStatistics`, the repository index, `telemetry.rpc.RpcStats`). So
ModelStatistics and /metrics report the same numbers.

A scrape takes one snapshot of those counters on the event loop thread (they are mutated
there without a lock), waits for it in the HTTP thread, then lets the SDK collect:
observable counters and gauges read the snapshot in their callbacks. The SDK has no
asynchronous histogram, so histograms are kept as bucket counts in the statistics and
handed to the Prometheus reader as OpenTelemetry histogram points (`_Reader`), the role
the specification gives a MetricProducer; names and units are converted by the same
exporter code as every other instrument.

A pipeline's steps have series of their own, `inference.pipeline.step.*` with a `step`
label, read from `Composed.step_statistics()` in the same snapshot; they are not folded
into the pipeline's series with a `step` label, so sums over `inference_requests_total`
still count each request once.

Names follow the OpenTelemetry conventions (dotted, units in UCUM, no `_total` in the
instrument name); the exporter turns `inference.request.duration` (unit s) into
`inference_request_duration_seconds` and counters into `..._total`. docs/observability.md
lists them with their Triton equivalents.
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest

from server.core.models import READY, UNAVAILABLE, Composed, IndexEntry, ServedModel
from server.core.statistics import BATCH_SIZE_BOUNDS, BatcherStatistics, Buckets, ModelStats
from server.telemetry.rpc import RpcStats

SCOPE = "server"
SNAPSHOT_TIMEOUT_S = 5.0  # a scrape gives up when the event loop does not answer in time
STATES = (READY, "LOADING", "UNLOADING", UNAVAILABLE)
OK = "OK"

StatusName = Callable[[type[BaseException]], str]


@dataclass(frozen=True, slots=True)
class StepSnapshot:
    """One step of a pipeline version, copied on the event loop thread."""

    model: str
    version: str
    step: str
    batched: bool  # in a batcher of its own: its executions, queue and compute are its own
    success: Buckets  # time each request spent in the step
    failures: dict[str, Buckets]  # by status name
    queue: Buckets
    compute: Buckets
    inference_count: int
    execution_count: int

    @property
    def attributes(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version, "step": self.step}


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    """One loaded version's counters, copied on the event loop thread."""

    model: str
    version: str
    success: Buckets
    failures: dict[str, Buckets]  # by status name
    queue: Buckets
    compute: Buckets
    inference_count: int
    execution_count: int
    compute_ns: dict[str, int]  # input, infer, output: per request, as ModelStatistics
    batches: dict[int, int]  # batch size -> executions
    deprecated_uses: int
    batcher: BatcherStatistics
    queue_limit: int  # 0: unbounded
    steps: tuple[StepSnapshot, ...] = ()  # a pipeline's steps, in order

    @property
    def attributes(self) -> dict[str, str]:
        return {"model": self.model, "version": self.version}


@dataclass(frozen=True, slots=True)
class Snapshot:
    versions: list[VersionSnapshot] = field(default_factory=list)
    states: list[IndexEntry] = field(default_factory=list)
    ready: bool = False
    rpc: dict[tuple[str, str], Buckets] = field(default_factory=dict)


def _copy(b: Buckets) -> Buckets:
    return Buckets(b.bounds, list(b.counts), b.total)


def _merge(into: Buckets | None, b: Buckets) -> Buckets:
    if into is None:
        return _copy(b)
    into.counts = [x + y for x, y in zip(into.counts, b.counts, strict=True)]
    into.total += b.total
    return into


def _failures(s: ModelStats, status_name: StatusName) -> dict[str, Buckets]:
    failures: dict[str, Buckets] = {}
    for error, buckets in list(s.failure_buckets.items()):
        name = status_name(error)
        failures[name] = _merge(failures.get(name), buckets)
    return failures


def _steps(served: ServedModel, status_name: StatusName) -> tuple[StepSnapshot, ...]:
    if not isinstance(served, Composed):
        return ()
    return tuple(
        StepSnapshot(
            model=served.name,
            version=str(served.version),
            step=step.name,
            batched=step.batched,
            success=_copy(step.stats.success_buckets),
            failures=_failures(step.stats, status_name),
            queue=_copy(step.stats.queue_buckets),
            compute=_copy(step.stats.compute_buckets),
            inference_count=step.stats.inference_count,
            execution_count=step.stats.execution_count,
        )
        for step in served.step_statistics()
    )


def version_snapshot(served: ServedModel, status_name: StatusName) -> VersionSnapshot:
    s = served.stats
    return VersionSnapshot(
        model=served.name,
        version=str(served.version),
        success=_copy(s.success_buckets),
        failures=_failures(s, status_name),
        queue=_copy(s.queue_buckets),
        compute=_copy(s.compute_buckets),
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        compute_ns={
            "input": s.compute_input.ns,
            "infer": s.compute_infer.ns,
            "output": s.compute_output.ns,
        },
        batches={size: b.compute_infer.count for size, b in list(s.batches.items())},
        deprecated_uses=s.deprecated_uses,
        batcher=served.statistics(),
        queue_limit=served.config.batching.max_queue_size if served.config.max_batch_size else 0,
        steps=_steps(served, status_name),
    )


@dataclass(frozen=True, slots=True)
class Sources:
    """Where the counters come from; all read on the event loop thread."""

    versions: Callable[[], list[ServedModel]]
    states: Callable[[], list[IndexEntry]]
    ready: Callable[[], bool]
    status_name: StatusName = lambda error: error.__name__
    rpc: RpcStats | None = None

    def snapshot(self) -> Snapshot:
        return Snapshot(
            versions=[version_snapshot(v, self.status_name) for v in self.versions()],
            states=self.states(),
            ready=self.ready(),
            rpc=self.rpc.snapshot() if self.rpc is not None else {},
        )


def _all_steps(snapshot: Snapshot) -> Iterator[StepSnapshot]:
    for v in snapshot.versions:
        yield from v.steps


def _seconds(bounds: Sequence[int]) -> list[float]:
    return [b / 1e9 for b in bounds]


def _point(
    attributes: dict[str, str], counts: Sequence[int], total: float, bounds: Sequence[float]
) -> HistogramDataPoint:
    now = time.time_ns()
    return HistogramDataPoint(
        attributes=attributes,
        start_time_unix_nano=_START_NS,
        time_unix_nano=now,
        count=sum(counts),
        sum=total,
        bucket_counts=list(counts),
        explicit_bounds=list(bounds),
        min=0.0,  # not kept; the Prometheus format has no min or max
        max=0.0,
    )


_START_NS = time.time_ns()


def histograms(snapshot: Snapshot) -> list[Metric]:
    """The snapshot's bucket counts as OpenTelemetry histograms."""
    request: list[HistogramDataPoint] = []
    queue: list[HistogramDataPoint] = []
    compute: list[HistogramDataPoint] = []
    batch: list[HistogramDataPoint] = []
    for v in snapshot.versions:
        attrs = v.attributes
        bounds = _seconds(v.success.bounds)
        request.append(
            _point({**attrs, "status": OK}, v.success.counts, v.success.total / 1e9, bounds)
        )
        for status, b in sorted(v.failures.items()):
            request.append(_point({**attrs, "status": status}, b.counts, b.total / 1e9, bounds))
        queue.append(_point(attrs, v.queue.counts, v.queue.total / 1e9, bounds))
        compute.append(_point(attrs, v.compute.counts, v.compute.total / 1e9, bounds))
        sizes = Buckets(BATCH_SIZE_BOUNDS)
        for size, executions in v.batches.items():
            sizes.counts[bisect.bisect_left(BATCH_SIZE_BOUNDS, size)] += executions
            sizes.total += size * executions
        batch.append(_point(attrs, sizes.counts, sizes.total, [float(b) for b in sizes.bounds]))
    step_request: list[HistogramDataPoint] = []
    step_queue: list[HistogramDataPoint] = []
    step_compute: list[HistogramDataPoint] = []
    for st in _all_steps(snapshot):
        attrs = st.attributes
        bounds = _seconds(st.success.bounds)
        ok = st.success
        step_request.append(_point({**attrs, "status": OK}, ok.counts, ok.total / 1e9, bounds))
        for status, b in sorted(st.failures.items()):
            step_request.append(
                _point({**attrs, "status": status}, b.counts, b.total / 1e9, bounds)
            )
        if st.batched:
            step_queue.append(_point(attrs, st.queue.counts, st.queue.total / 1e9, bounds))
            step_compute.append(_point(attrs, st.compute.counts, st.compute.total / 1e9, bounds))
    rpc = [
        _point(
            {"rpc.system.name": "grpc", "rpc.method": method, "rpc.response.status_code": code},
            b.counts,
            b.total / 1e9,
            _seconds(b.bounds),
        )
        for (method, code), b in sorted(snapshot.rpc.items())
    ]
    found = [
        ("inference.request.duration", "s", "Time from arrival to answer, by outcome", request),
        ("inference.queue.duration", "s", "Time successful requests waited in the queue", queue),
        ("inference.compute.duration", "s", "Time each execution (batch) took", compute),
        ("inference.batch.size", "{row}", "Rows per execution", batch),
        (
            "inference.pipeline.step.request.duration",
            "s",
            "Time each pipeline request spent in the step, by outcome",
            step_request,
        ),
        (
            "inference.pipeline.step.queue.duration",
            "s",
            "Time successful requests waited in the step's queue (steps with a batcher)",
            step_queue,
        ),
        (
            "inference.pipeline.step.compute.duration",
            "s",
            "Time each execution (batch) of the step took (steps with a batcher)",
            step_compute,
        ),
        ("rpc.server.call.duration", "s", "Duration of incoming RPCs", rpc),
    ]
    return [
        Metric(
            name=name,
            description=description,
            unit=unit,
            data=Histogram(points, AggregationTemporality.CUMULATIVE),
        )
        for name, unit, description, points in found
        if points
    ]


class _Reader(PrometheusMetricReader):
    """The Prometheus reader, plus the histograms kept as bucket counts."""

    def __init__(
        self, registry: CollectorRegistry, resource: Resource, extra: Callable[[], list[Metric]]
    ) -> None:
        super().__init__(registry=registry, scope_info_enabled=False)
        self._resource = resource
        self._extra = extra

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        scope = ScopeMetrics(InstrumentationScope(SCOPE), self._extra(), "")
        resources = list(metrics_data.resource_metrics) if metrics_data is not None else []
        if resources:
            first = resources[0]
            resources[0] = ResourceMetrics(
                first.resource, [*first.scope_metrics, scope], first.schema_url
            )
        else:
            resources = [ResourceMetrics(self._resource, [scope], "")]
        super()._receive_metrics(MetricsData(resources), timeout_millis, **kwargs)


class Metrics:
    """The server's meters; `exposition()` renders one scrape."""

    def __init__(self, sources: Sources, resource: Resource) -> None:
        self._sources = sources
        self._snapshot = Snapshot()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # one scrape at a time; never taken on the loop
        self.registry = CollectorRegistry(auto_describe=False)
        self._reader = _Reader(self.registry, resource, lambda: histograms(self._snapshot))
        self._provider = MeterProvider(
            metric_readers=[self._reader], resource=resource, shutdown_on_exit=False
        )
        meter = self._provider.get_meter(SCOPE)
        counters: list[tuple[str, str, str, Callable[[], Iterable[Observation]]]] = [
            ("inference.requests", "{request}", "Requests by outcome", self._requests),
            ("inference.inferences", "{inference}", "Batch rows executed", self._inferences),
            ("inference.executions", "{execution}", "Executions (batches)", self._executions),
            ("inference.compute.time", "s", "Compute time per request, by phase", self._compute),
            (
                "inference.deprecated_uses",
                "{request}",
                "Requests served by a deprecated version",
                self._deprecated,
            ),
            (
                "inference.pipeline.step.requests",
                "{request}",
                "Pipeline requests through each step, by outcome",
                self._step_requests,
            ),
            (
                "inference.pipeline.step.inferences",
                "{inference}",
                "Batch rows the step executed (steps with a batcher)",
                self._step_inferences,
            ),
            (
                "inference.pipeline.step.executions",
                "{execution}",
                "Executions (batches) of the step (steps with a batcher)",
                self._step_executions,
            ),
        ]
        for name, unit, description, read in counters:
            meter.create_observable_counter(name, [_callback(read)], unit, description)
        gauges: list[tuple[str, str, str, Callable[[], Iterable[Observation]]]] = [
            ("inference.pending_requests", "{request}", "Requests queued", self._pending),
            (
                "inference.active_executions",
                "{execution}",
                "Executions running now",
                self._active,
            ),
            ("inference.execution.slots", "{execution}", "Concurrent executions", self._slots),
            ("inference.queue.limit", "{request}", "max_queue_size; absent: none", self._limit),
        ]
        for name, unit, description, read in gauges:
            meter.create_observable_up_down_counter(name, [_callback(read)], unit, description)
        meter.create_observable_gauge(
            "inference.model.state",
            [_callback(self._states)],
            "1",
            "1 for each version's current state (READY, LOADING, UNLOADING, UNAVAILABLE)",
        )
        meter.create_observable_gauge(
            "inference.server.ready",
            [_callback(self._ready)],
            "1",
            "1 when every model the server is expected to serve is ready",
        )

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop whose thread owns the counters."""
        self._loop = loop

    def snapshot(self) -> Snapshot:
        """On the event loop thread only."""
        return self._sources.snapshot()

    def render(self, snapshot: Snapshot) -> bytes:
        """The Prometheus text for a snapshot; off the event loop thread."""
        with self._lock:
            self._snapshot = snapshot
            return generate_latest(self.registry)

    def exposition(self) -> bytes:
        """One scrape, from any thread but the event loop's."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("metrics are not bound to an event loop yet")
        taken: concurrent.futures.Future[Snapshot] = concurrent.futures.Future()

        def take() -> None:
            try:
                taken.set_result(self.snapshot())
            except BaseException as exc:
                taken.set_exception(exc)

        loop.call_soon_threadsafe(take)
        return self.render(taken.result(SNAPSHOT_TIMEOUT_S))

    def shutdown(self) -> None:
        self._provider.shutdown()

    # --- instrument callbacks: read the snapshot ---------------------------------------

    def _requests(self) -> Iterable[Observation]:
        for v in self._snapshot.versions:
            yield Observation(v.success.count, {**v.attributes, "status": OK})
            for status, b in sorted(v.failures.items()):
                yield Observation(b.count, {**v.attributes, "status": status})

    def _inferences(self) -> Iterable[Observation]:
        return [Observation(v.inference_count, v.attributes) for v in self._snapshot.versions]

    def _executions(self) -> Iterable[Observation]:
        return [Observation(v.execution_count, v.attributes) for v in self._snapshot.versions]

    def _compute(self) -> Iterable[Observation]:
        for v in self._snapshot.versions:
            for phase, ns in v.compute_ns.items():
                yield Observation(ns / 1e9, {**v.attributes, "phase": phase})

    def _deprecated(self) -> Iterable[Observation]:
        return [Observation(v.deprecated_uses, v.attributes) for v in self._snapshot.versions]

    def _step_requests(self) -> Iterable[Observation]:
        for st in _all_steps(self._snapshot):
            yield Observation(st.success.count, {**st.attributes, "status": OK})
            for status, b in sorted(st.failures.items()):
                yield Observation(b.count, {**st.attributes, "status": status})

    def _step_inferences(self) -> Iterable[Observation]:
        return [
            Observation(st.inference_count, st.attributes)
            for st in _all_steps(self._snapshot)
            if st.batched
        ]

    def _step_executions(self) -> Iterable[Observation]:
        return [
            Observation(st.execution_count, st.attributes)
            for st in _all_steps(self._snapshot)
            if st.batched
        ]

    def _pending(self) -> Iterable[Observation]:
        return [Observation(v.batcher.queue_depth, v.attributes) for v in self._snapshot.versions]

    def _active(self) -> Iterable[Observation]:
        return [Observation(v.batcher.in_flight, v.attributes) for v in self._snapshot.versions]

    def _slots(self) -> Iterable[Observation]:
        return [Observation(v.batcher.slots, v.attributes) for v in self._snapshot.versions]

    def _limit(self) -> Iterable[Observation]:
        return [
            Observation(v.queue_limit, v.attributes)
            for v in self._snapshot.versions
            if v.queue_limit
        ]

    def _states(self) -> Iterable[Observation]:
        for entry in self._snapshot.states:
            for state in STATES:
                attributes = {"model": entry.name, "version": entry.version, "state": state}
                yield Observation(int(entry.state == state), attributes)

    def _ready(self) -> Iterable[Observation]:
        return [Observation(int(self._snapshot.ready))]


def _callback(
    read: Callable[[], Iterable[Observation]],
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        return list(read())

    return callback
