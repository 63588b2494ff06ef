"""Cumulative per-version statistics, in the shape Triton's ModelStatistics reports them.

Plain counters mutated from the event loop thread only, so the hot path takes no lock.
Each event is recorded in one place: a request's outcome by the data plane
(`record_request`), a batch's queue waits and compute by the batcher (`record_execution`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


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

    def record_request(self, ok: bool, ns: int, now_ms: int) -> None:
        """One request ended: succeeded, or failed for any reason (cancelled included)."""
        if ok:
            self.success.add(ns)
            self.last_inference_ms = now_ms
        else:
            self.fail.add(ns)

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
        for ns in queue_ns:
            self.queue.add(ns)
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
