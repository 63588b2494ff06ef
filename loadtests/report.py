"""Renders results as a terminal table, a markdown page and a JSON document."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from loadtests.measurements import Results
from loadtests.targets import Target

ROW_HEADER = (
    "server", "model", "mode", "workers", "conc", "infer/s", "p50 ms", "p99 ms",
    "batch", "x ceil A", "x ceil B",
)  # fmt: skip
B_HEADER = ("model", "version", "batch", "rows/s", "calls/s", "ms/call")
TARGET_HEADER = ("target", "value", "wanted", "met")
UNSTABLE_MARK = "~"  # perf_analyzer never saw three agreeing windows; a looser retry measured it


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "NO")


def row_cells(results: Results) -> list[tuple[str, ...]]:
    cells: list[tuple[str, ...]] = []
    for row in results.rows:
        m = row.measured
        mark = "" if m.stable else UNSTABLE_MARK
        cells.append(
            (
                row.server,
                row.model,
                row.mode,
                str(row.workers),
                str(row.concurrency),
                mark + _number(m.throughput, 0),
                _number(m.p50_ms),
                _number(m.p99_ms),
                _number(row.mean_batch, 1),
                _number(row.ratio_a),
                _number(row.ratio_b, 3),
            )
        )
    return cells


def b_cells(results: Results) -> list[tuple[str, ...]]:
    return [
        (
            c.model,
            c.version,
            str(c.batch),
            _number(c.rows_per_s, 0),
            _number(c.calls_per_s, 0),
            _number(c.ms_per_call, 3),
        )
        for c in results.ceilings_b
    ]


def target_cells(targets: Sequence[Target]) -> list[tuple[str, ...]]:
    return [(t.metric, _number(t.value), t.target, _met(t.met)) for t in targets]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i > 2 else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def text(results: Results, targets: Sequence[Target]) -> str:
    return "\n\n".join(
        (
            text_table(ROW_HEADER, row_cells(results)),
            "Ceiling B (in-process ONNX Runtime):\n" + text_table(B_HEADER, b_cells(results)),
            "Targets:\n" + text_table(TARGET_HEADER, target_cells(targets)),
        )
    )


def markdown(results: Results, targets: Sequence[Target]) -> str:
    environment = ", ".join(f"{k} {v}" for k, v in results.environment.items())
    return (
        "\n\n".join(
            (
                "# Benchmark results",
                f"Written by `make bench` ({environment}). Throughput is inferences/s; "
                f"`{UNSTABLE_MARK}` marks a point perf_analyzer could only measure with a loose "
                "stability criterion. See docs/performance.md for the method.",
                "## Served and ceiling A",
                markdown_table(ROW_HEADER, row_cells(results)),
                "## Ceiling B: in-process ONNX Runtime",
                markdown_table(B_HEADER, b_cells(results)),
                "## Targets",
                markdown_table(TARGET_HEADER, target_cells(targets)),
            )
        )
        + "\n"
    )


def write_json(results: Results, targets: Sequence[Target], path: Path) -> None:
    rows = []
    for row in results.rows:
        entry = dataclasses.asdict(row)
        entry.update(entry.pop("measured"))
        rows.append(entry)
    document = {
        "environment": results.environment,
        "rows": rows,
        "ceiling_b": [
            {**dataclasses.asdict(c), "ms_per_call": c.ms_per_call} for c in results.ceilings_b
        ],
        "targets": [dataclasses.asdict(t) for t in targets],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
