"""What one benchmark run measured: perf_analyzer rows, ceiling B, and the ratios between them."""

from __future__ import annotations

from dataclasses import dataclass, field

from loadtests.batches import BatchMix
from loadtests.loadgen import Measurement
from loadtests.ort_ceiling import CeilingB

NOOP = "noop"  # the `server` of ceiling A rows; its replies are digits-shaped


@dataclass(slots=True)
class Row:
    """One perf_analyzer point against the real server or the no-op one."""

    server: str  # "server" or NOOP
    model: str  # NOOP for the no-op server
    mode: str  # "unary" or "streaming"
    workers: int  # processes sharing the port
    concurrency: int
    measured: Measurement
    batches: BatchMix | None = None  # None for the no-op server
    ratio_a: float | None = None
    ratio_b: float | None = None

    @property
    def mean_batch(self) -> float | None:
        return None if self.batches is None else self.batches.mean


@dataclass(slots=True)
class Results:
    environment: dict[str, object]
    rows: list[Row] = field(default_factory=list)
    ceilings_b: list[CeilingB] = field(default_factory=list)

    def ceiling_a(self, row: Row) -> Row | None:
        """The no-op row with the same mode, process count and concurrency."""
        return self.find(NOOP, NOOP, row.mode, row.workers, row.concurrency)

    def ceiling_b(self, model: str, batch: float) -> CeilingB | None:
        """The in-process measurement at the batch size nearest `batch`."""
        candidates = [c for c in self.ceilings_b if c.model == model]
        return min(candidates, key=lambda c: abs(c.batch - batch), default=None)

    def best_batched(self, model: str) -> CeilingB | None:
        """Ceiling B's highest throughput among the batch sizes the batcher formed (> 1)."""
        candidates = [c for c in self.ceilings_b if c.model == model and c.batch > 1]
        return max(candidates, key=lambda c: c.rows_per_s, default=None)

    def fill_ratios(self) -> None:
        """Ratio A against the matching no-op row; ratio B at the batch size the row formed.

        Ceiling B is one process, so only one-worker rows get a ratio B.
        """
        for row in self.rows:
            a = self.ceiling_a(row)
            row.ratio_a = row.measured.throughput / a.measured.throughput if a else None
            b = None
            if row.workers == 1 and row.mean_batch is not None:
                b = self.ceiling_b(row.model, row.mean_batch)
            row.ratio_b = row.measured.throughput / b.rows_per_s if b else None

    def find(
        self, server: str, model: str, mode: str, workers: int, concurrency: int
    ) -> Row | None:
        key = (server, model, mode, workers, concurrency)
        for row in self.rows:
            if (row.server, row.model, row.mode, row.workers, row.concurrency) == key:
                return row
        return None
