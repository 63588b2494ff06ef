"""One perf_analyzer measurement: a model, a mode and a concurrency against one address.

The client is asynchronous (`-a`, or `--streaming`, which implies it): a few threads keep
the requests in flight, so the load generator takes less of the two cores it shares with
the server than one thread per request would.
"""

from __future__ import annotations

import csv
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loadtests.launch import ROOT
from loadtests.workloads import Workload

PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"
UNSTABLE = 2  # perf_analyzer's exit code when the windows never agree; it then writes no CSV
MODES = ("unary", "streaming")


@dataclass(frozen=True, slots=True)
class Stability:
    """When perf_analyzer may stop: three windows agreeing within `percent`."""

    percent: int
    max_trials: int
    interval_scale: float = 1.0  # times each workload's window


@dataclass(frozen=True, slots=True)
class Measurement:
    throughput: float  # inferences/s
    p50_ms: float
    p99_ms: float
    stable: bool  # False: measured again with a loose criterion after perf_analyzer gave up


class LoadError(RuntimeError):
    """perf_analyzer failed for a reason other than instability."""


def measure(
    address: str,
    workload: Workload,
    mode: str,
    concurrency: int,
    stability: Stability,
    fallback: Stability,
) -> Measurement:
    """Measure with `stability`; if the machine is too noisy for it, once more with `fallback`."""
    result = _run(address, workload, mode, concurrency, stability)
    if result is not None:
        return result
    retried = _run(address, workload, mode, concurrency, fallback)
    if retried is None:
        raise LoadError(f"{workload.model} {mode} c={concurrency}: no stable measurement")
    return Measurement(retried.throughput, retried.p50_ms, retried.p99_ms, stable=False)


def _run(
    address: str, workload: Workload, mode: str, concurrency: int, stability: Stability
) -> Measurement | None:
    interval = workload.window_ms(concurrency, stability.interval_scale)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        report = Path(tmp, "report.csv")
        command = [
            str(PERF_ANALYZER),
            *("-m", workload.model, "-i", "grpc", "-u", address, "-b", "1"),
            *("--concurrency-range", f"{concurrency}:{concurrency}"),
            *("--measurement-interval", str(interval)),
            *("--stability-percentage", str(stability.percent)),
            *("--max-trials", str(stability.max_trials)),
            "--streaming" if mode == "streaming" else "-a",
            *workload.perf_analyzer_args(),
            *("-f", str(report)),
        ]
        timeout = 60 + interval / 1000 * (stability.max_trials + 2) * 2
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == UNSTABLE:
            return None
        if proc.returncode != 0 or not report.exists():
            raise LoadError(
                f"perf_analyzer exited {proc.returncode}: {' '.join(command)}\n"
                + (proc.stdout + proc.stderr)[-2000:]
            )
        with report.open() as f:
            row = next(csv.DictReader(f))
    return Measurement(
        throughput=float(row["Inferences/Second"]),
        p50_ms=float(row["p50 latency"]) / 1000,
        p99_ms=float(row["p99 latency"]) / 1000,
        stable=True,
    )
