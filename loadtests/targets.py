"""The performance targets of issue 3, each evaluated from one run's results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from loadtests.measurements import NOOP, Results, Row
from loadtests.workloads import SMALL

HEAVY = ("minilm", "text_direction")


@dataclass(frozen=True, slots=True)
class Target:
    metric: str
    value: float | None  # None: a point it needs was not measured (filtered out or failed)
    target: str
    met: bool | None


def _ratio(metric: str, value: float | None, minimum: float) -> Target:
    met = None if value is None else value >= minimum
    return Target(metric, value, f">= {minimum}", met)


def _both(
    first: Row | None, second: Row | None, value: Callable[[Row, Row], float]
) -> float | None:
    return None if first is None or second is None else value(first, second)


def evaluate(results: Results) -> list[Target]:
    def server(model: str, mode: str, workers: int, concurrency: int) -> Row | None:
        return results.find("server", model, mode, workers, concurrency)

    def noop(mode: str, workers: int, concurrency: int) -> Row | None:
        return results.find(NOOP, NOOP, mode, workers, concurrency)

    def throughput_ratio(row: Row, ceiling: Row) -> float:
        return row.measured.throughput / ceiling.measured.throughput

    targets = [
        _ratio(
            f"{SMALL} c=32 x1 unary / ceiling A",
            _both(server(SMALL, "unary", 1, 32), noop("unary", 1, 32), throughput_ratio),
            0.9,
        )
    ]
    p50_excess = _both(
        server(SMALL, "unary", 1, 1),
        noop("unary", 1, 1),
        lambda row, ceiling: row.measured.p50_ms - ceiling.measured.p50_ms,
    )
    targets.append(
        Target(
            f"{SMALL} c=1 x1 unary p50 - ceiling A p50 (ms)",
            p50_excess,
            "<= 0.2",
            None if p50_excess is None else p50_excess <= 0.2,
        )
    )
    for model in HEAVY:
        row = server(model, "unary", 1, 32)
        best = results.best_batched(model)
        value = None if row is None or best is None else row.measured.throughput / best.rows_per_s
        targets.append(_ratio(f"{model} c=32 x1 unary / best batched ceiling B", value, 0.9))
    targets.append(
        _ratio(
            f"{SMALL} c=32 x1 streaming / unary",
            _both(
                server(SMALL, "streaming", 1, 32), server(SMALL, "unary", 1, 32), throughput_ratio
            ),
            2.0,
        )
    )
    targets.append(
        _ratio(
            f"{SMALL} c=128 x2 unary / 2-process ceiling A",
            _both(server(SMALL, "unary", 2, 128), noop("unary", 2, 128), throughput_ratio),
            0.9,
        )
    )
    return targets
