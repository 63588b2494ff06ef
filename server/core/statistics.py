"""Cumulative per-version statistics, in the shape Triton's ModelStatistics reports them.

Plain counters mutated from the event loop thread only, so the hot path takes no lock.
Each event is recorded in one place: a request's outcome by the data plane
(`record_request`), a batch's queue waits and compute by the batcher (`record_execution`).

The histograms the metrics export are bucket counts kept here too (`Buckets`): one bisect
and one increment per observation, about 0.5 us, where recording into an OpenTelemetry
SDK histogram costs some 70 times more and takes a lock (docs/observability.md, "Cost").
ModelStatistics and /metrics therefore read the same numbers.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field

# Histogram bucket upper bounds, inclusive (Prometheus `le`): durations from 100 us to 10 s.
DURATION_BOUNDS_NS: tuple[int, ...] = tuple(
    int(ms * 1_000_000)
    for ms in (
        0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000
    )
)  # fmt: skip
# Batch sizes (rows per execution): powers of two up to 1024.
BATCH_SIZE_BOUNDS: tuple[int, ...] = tuple(2**i for i in range(11))


@dataclass(slots=True)
class Buckets:
    """A cumulative histogram: `counts[i]` observations fell in (bounds[i-1], bounds[i]],
    the last one above every bound; `total` is their sum."""

    bounds: tuple[int, ...] = DURATION_BOUNDS_NS
    counts: list[int] = field(default_factory=list)
    total: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def add(self, value: int) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchDurations:
    """Per batch size: one count per execution of that size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    inference_count: int = 0  # requests' batch rows that ran
    execution_count: int = 0  # session.run calls
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, BatchDurations] = field(default_factory=dict)
    deprecated_uses: int = 0  # requests served while the version is deprecated
    # For the metrics: request durations of successes, and of failures by error type
    # (a face maps the type to its status code); queue waits of successful requests, as
    # `queue`; compute (input + infer + output) of each execution.
    success_buckets: Buckets = field(default_factory=Buckets)
    failure_buckets: dict[type[BaseException], Buckets] = field(default_factory=dict)
    queue_buckets: Buckets = field(default_factory=Buckets)
    compute_buckets: Buckets = field(default_factory=Buckets)

    def record_request(
        self, ok: bool, ns: int, now_ms: int, error: type[BaseException] = Exception
    ) -> None:
        """One request ended: succeeded, or failed for any reason (cancelled included);
        `error` is the failure's type."""
        if ok:
            self.success.add(ns)
            self.success_buckets.add(ns)
            self.last_inference_ms = now_ms
        else:
            self.fail.add(ns)
            buckets = self.failure_buckets.get(error)
            if buckets is None:
                buckets = self.failure_buckets[error] = Buckets()
            buckets.add(ns)

    def record_execution(
        self,
        rows: int,
        queue_ns: Sequence[int],
        input_ns: int,
        infer_ns: int,
        output_ns: int,
    ) -> None:
        """One successful batch. As Triton: queue time of successful requests only, and
        request-level compute durations once per request in the batch."""
        requests = len(queue_ns)
        queue_buckets = self.queue_buckets
        for ns in queue_ns:
            self.queue.add(ns)
            queue_buckets.add(ns)
        self.compute_buckets.add(input_ns + infer_ns + output_ns)
        self.execution_count += 1
        self.inference_count += rows
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = BatchDurations()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)


@dataclass(frozen=True, slots=True)
class BatcherStatistics:
    """A snapshot of one batcher, for metrics."""

    queue_depth: int
    in_flight: int
    slots: int
