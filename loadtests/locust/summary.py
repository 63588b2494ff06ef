"""A short summary per user class: requests/s, p50/p95/p99 and failures.

Locust's own statistics round response times to whole milliseconds below 100 ms, too
coarse for a server that answers digits in half a millisecond. So every process also
counts each request's time in 1 %-wide logarithmic bins, per request type (one type per
user class, see users.py); workers send their bins to the master with each stats report,
and at the end the master (or the one local process) writes `<--csv prefix>_summary.json`
and `_summary.txt` and logs the table. Each process also measures the CPU time it spends
from the test's start (so without its start-up), to tell how many client cores a load
needs: workers send theirs with their reports too.
"""

from __future__ import annotations

import json
import logging
import math
import resource
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from locust import events
from locust.runners import WorkerRunner

log = logging.getLogger(__name__)
BIN = math.log(1.01)  # bin width: 1 %
REPORT_KEY = "v2_loadtest_latency"


@dataclass(slots=True)
class Latencies:
    """Per request type: a histogram of response times and the failure count."""

    bins: dict[str, Counter[int]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0  # client CPU time, every process of the test

    def add(self, request_type: str, response_time_ms: float, failed: bool) -> None:
        key = round(math.log(max(response_time_ms, 1e-3) * 1000) / BIN)  # in µs, 1 % bins
        self.bins.setdefault(request_type, Counter())[key] += 1
        if failed:
            self.failures[request_type] += 1

    def merge(self, data: dict[str, Any]) -> None:
        for request_type, bins in data["bins"].items():
            mine = self.bins.setdefault(request_type, Counter())
            for key, count in bins.items():
                mine[int(key)] += count
        self.failures.update(data["failures"])
        self.cpu_s += data["cpu_s"]

    def take(self) -> dict[str, Any]:
        """The counts so far as JSON-able data, and start again from zero."""
        data = {
            "bins": {t: dict(b) for t, b in self.bins.items()},
            "failures": dict(self.failures),
            "cpu_s": self.cpu_s,
        }
        self.bins, self.failures, self.cpu_s = {}, Counter(), 0.0
        return data

    def percentile_ms(self, request_type: str, fraction: float) -> float:
        bins = self.bins.get(request_type, Counter())
        total = sum(bins.values())
        if not total:
            return math.nan
        rank, seen = fraction * total, 0
        for key in sorted(bins):
            seen += bins[key]
            if seen >= rank:
                return math.exp(key * BIN) / 1000
        return math.exp(max(bins) * BIN) / 1000


@dataclass(frozen=True, slots=True)
class ClassSummary:
    user_class: str
    request_type: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def summarize(latencies: Latencies, seconds: float, classes: dict[str, str]) -> list[ClassSummary]:
    """One row per request type seen; `classes` maps request types to user class names."""
    rows = []
    for request_type in sorted(latencies.bins):
        requests = sum(latencies.bins[request_type].values())
        rows.append(
            ClassSummary(
                user_class=classes.get(request_type, request_type),
                request_type=request_type,
                requests=requests,
                failures=latencies.failures[request_type],
                requests_per_s=requests / seconds if seconds > 0 else 0.0,
                p50_ms=latencies.percentile_ms(request_type, 0.50),
                p95_ms=latencies.percentile_ms(request_type, 0.95),
                p99_ms=latencies.percentile_ms(request_type, 0.99),
            )
        )
    return rows


class CpuClock:
    """This process's CPU seconds since the last reading."""

    def __init__(self) -> None:
        self._last = self._now()

    @staticmethod
    def _now() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def lap(self) -> float:
        now = self._now()
        spent, self._last = now - self._last, now
        return spent


def table(rows: list[ClassSummary]) -> str:
    header = f"{'user class':<15} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
    header += f"{'requests':>9} {'failures':>9}"
    lines = [header]
    for row in rows:
        lines.append(
            f"{row.user_class:<15} {row.requests_per_s:>9,.1f} {row.p50_ms:>8.2f} "
            f"{row.p95_ms:>8.2f} {row.p99_ms:>8.2f} {row.requests:>9,} {row.failures:>9,}"
        )
    return "\n".join(lines)


_latencies = Latencies()
_cpu = CpuClock()


@events.request.add_listener
def _count(request_type: str, response_time: float, exception: Any = None, **_: Any) -> None:
    _latencies.add(request_type, response_time or 0.0, exception is not None)


@events.report_to_master.add_listener
def _send(client_id: str, data: dict[str, Any], **_: Any) -> None:
    _latencies.cpu_s += _cpu.lap()
    data[REPORT_KEY] = _latencies.take()


@events.worker_report.add_listener
def _receive(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if REPORT_KEY in data:
        _latencies.merge(data[REPORT_KEY])


@events.test_start.add_listener
def _reset(environment: Any, **_: Any) -> None:
    _cpu.lap()
    if not isinstance(environment.runner, WorkerRunner):
        _latencies.take()


@events.quitting.add_listener
def _write(environment: Any, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _latencies.bins:
        return
    from loadtests.locust.users import USER_CLASSES

    classes = {cls.request_type: name for name, cls in USER_CLASSES.items()}
    stats = environment.stats
    seconds = (stats.last_request_timestamp or stats.start_time) - stats.start_time
    rows = summarize(_latencies, seconds, classes)
    cpu_s = _latencies.cpu_s + _cpu.lap()
    requests = sum(row.requests for row in rows)
    text = (
        table(rows)
        + "\n"
        + (
            f"client CPU: {cpu_s:.1f} s = {cpu_s / max(seconds, 1e-9):.2f} cores, "
            f"{cpu_s * 1000 / max(requests, 1):.3f} ms per request"
        )
    )
    log.info("Summary per user class (%.1f s):\n%s", seconds, text)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        options = vars(environment.parsed_options)
        document = {
            "seconds": seconds,
            "client_cpu_s": cpu_s,
            "options": {k: v for k, v in options.items() if _jsonable(v)},
            "classes": [asdict(row) for row in rows],
        }
        Path(f"{prefix}_summary.json").write_text(json.dumps(document, indent=2) + "\n")
        Path(f"{prefix}_summary.txt").write_text(text + "\n")


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | list)
