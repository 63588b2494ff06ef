"""`make bench`: the server against its two ceilings, in one run, on this machine.

Ceiling A is a no-op server on the same gRPC stack (loadtests/noop_server.py): the most
any Python server can answer. Ceiling B is ONNX Runtime in-process at the batch sizes the
batcher formed (loadtests/ort_ceiling.py): the most the model can compute. Served
throughput approaches the lower of the two; the ratios are our overhead. Absolute numbers
move with the machine and whatever else runs on it, so every ceiling is measured in the
same run, and points that share a ceiling run back to back.

    python -m loadtests.bench [--quick] [--models digits,minilm] [--concurrency 1,32]

A full run writes loadtests/results/latest.{json,md}; a quick or filtered one writes
partial.{json,md}, which git ignores. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from loadtests import launch, report, targets
from loadtests.batches import StatisticsClient, mix
from loadtests.loadgen import MODES, PERF_ANALYZER, LoadError, Stability, measure
from loadtests.measurements import NOOP, Results, Row
from loadtests.ort_ceiling import Session
from loadtests.workloads import SMALL, WORKLOADS

RESULTS = launch.ROOT / "loadtests" / "results"
MODELS = tuple(WORKLOADS)
CONCURRENCY = (1, 8, 32, 128)
WORKERS = (1, 2)  # 2: one process per core
ANY = 1000  # a stability percentage that accepts the first three windows


@dataclass(frozen=True, slots=True)
class Plan:
    models: tuple[str, ...]
    concurrency: tuple[int, ...]
    heavy_streaming: tuple[int, ...]  # concurrencies at which heavy models also stream (x1)
    stability: Stability
    fallback: Stability  # after perf_analyzer gives up on `stability`
    stem: str  # results file name


@dataclass(frozen=True, slots=True)
class Point:
    server: str  # NOOP or "server"
    model: str
    mode: str
    workers: int
    concurrency: int


def parse(argv: Sequence[str] | None = None) -> Plan:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="short windows, fewer points")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--concurrency", help="comma-separated (default 1,8,32,128)")
    args = parser.parse_args(argv)
    models = tuple(args.models.split(","))
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {list(MODELS)}")
    if args.concurrency:
        concurrency = tuple(int(c) for c in args.concurrency.split(","))
    else:
        concurrency = (1, 32, 128) if args.quick else CONCURRENCY
    full = not args.quick and models == MODELS and concurrency == CONCURRENCY
    if args.quick:
        return Plan(
            models, concurrency, (), Stability(30, 3, 0.34), Stability(ANY, 3, 0.34), "partial"
        )
    return Plan(
        models,
        concurrency,
        tuple(c for c in concurrency if c == 32),
        Stability(15, 5),
        Stability(ANY, 3),
        "latest" if full else "partial",
    )


def points(plan: Plan) -> list[Point]:
    """Each served digits point right after the ceiling-A point it is compared with."""
    order = []
    for concurrency in plan.concurrency:
        for workers in WORKERS:
            for mode in MODES:
                order.append(Point(NOOP, NOOP, mode, workers, concurrency))
                if SMALL in plan.models:
                    order.append(Point("server", SMALL, mode, workers, concurrency))
    for model in plan.models:
        if model == SMALL:
            continue
        for workers in WORKERS:
            for concurrency in plan.concurrency:
                order.append(Point("server", model, "unary", workers, concurrency))
                if workers == 1 and concurrency in plan.heavy_streaming:
                    order.append(Point("server", model, "streaming", workers, concurrency))
    return order


def environment(plan: Plan) -> dict[str, object]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_before": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "grpcio": version("grpcio"),
        "perf_analyzer": "2.41.0",
        "stability_percent": plan.stability.percent,
        "max_trials": plan.stability.max_trials,
    }


def run_points(plan: Plan, results: Results) -> int:
    """Measure every point; returns how many failed."""
    failures = 0
    with launch.noop_and_real(WORKERS) as started, contextlib.ExitStack() as stack:
        clients = {}
        for workers in WORKERS:
            clients[workers] = StatisticsClient(started["server", workers].address)
            stack.callback(clients[workers].close)
        order = points(plan)
        for index, point in enumerate(order, 1):
            address = started[point.server, point.workers].address
            workload = WORKLOADS[SMALL if point.server == NOOP else point.model]
            label = (
                f"[{index}/{len(order)}] {point.server} x{point.workers} {point.model} "
                f"{point.mode} c={point.concurrency}"
            )
            begin = time.monotonic()
            client = clients[point.workers] if point.server != NOOP else None
            before = client.snapshot(point.model) if client else {}
            try:
                measured = measure(
                    address, workload, point.mode, point.concurrency, plan.stability, plan.fallback
                )
            except LoadError as exc:
                failures += 1
                print(f"{label}: FAILED\n{exc}", file=sys.stderr, flush=True)
                continue
            batches = mix(before, client.snapshot(point.model)) if client else None
            results.rows.append(
                Row(
                    point.server,
                    point.model,
                    point.mode,
                    point.workers,
                    point.concurrency,
                    measured,
                    batches,
                )
            )
            print(
                f"{label}: {measured.throughput:,.0f} infer/s, p50 {measured.p50_ms:.2f} ms"
                f"{'' if measured.stable else ' (unstable)'} [{time.monotonic() - begin:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
    return failures


def run_ceilings_b(plan: Plan, results: Results) -> None:
    """Batch 1 and the mean batch of every one-worker point, on the version that served."""
    for model in plan.models:
        mixes = [
            r.batches
            for r in results.rows
            if r.model == model and r.workers == 1 and r.batches is not None
        ]
        if not mixes:
            continue
        served = max({m.version for m in mixes}, key=int)
        session = Session(Path("models"), WORKLOADS[model], served)
        sizes = {1} | {round(m.mean) for m in mixes}
        for size in sorted(s for s in sizes if 1 <= s <= session.max_batch_size):
            ceiling = session.measure(size)
            results.ceilings_b.append(ceiling)
            print(
                f"ceiling B {model} b={size}: {ceiling.rows_per_s:,.0f} rows/s",
                file=sys.stderr,
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> int:
    plan = parse(argv)
    if not PERF_ANALYZER.exists():
        print(f"{PERF_ANALYZER} is missing: run `make perf-analyzer`", file=sys.stderr)
        return 1
    os.chdir(launch.ROOT)
    start = time.monotonic()
    results = Results(environment(plan))
    failures = run_points(plan, results)
    run_ceilings_b(plan, results)  # after the servers stopped: the cores are the model's
    results.fill_ratios()
    results.environment["duration_s"] = round(time.monotonic() - start)
    results.environment["load_average_after"] = round(os.getloadavg()[0], 2)
    evaluated = targets.evaluate(results)
    print(report.text(results, evaluated))
    RESULTS.mkdir(exist_ok=True)
    report.write_json(results, evaluated, RESULTS / f"{plan.stem}.json")
    (RESULTS / f"{plan.stem}.md").write_text(report.markdown(results, evaluated))
    print(f"\nwrote {RESULTS / plan.stem}.json and .md", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
