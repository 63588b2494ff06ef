"""Locust next to perf_analyzer on digits, direct gRPC and through the gateway (gRPC,
gRPC-web and V2 REST), in one run (`make loadtest-compare`, the figures in
docs/loadtesting.md).

    python -m loadtests.locust.compare [--concurrency 16] [--seconds 20]

One server and one gateway serve every row; each row is one tool at one concurrency
(perf_analyzer `--concurrency-range C -a`, or C locust users back to back), with the same
digits images (loadtests/locust/samples.py). Rows that compare the two tools run back to
back. For every row it records what the client and the server processes spent in CPU, so
that the client's cost per request is on the table next to its throughput: on a shared
2-core machine, the load generator takes cores from the server it measures. CPU per
request moves little with the machine's load; throughput moves a lot, so `--repeat N`
runs the whole sequence N times and reports, per row, the run of median throughput.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtests import launch
from loadtests.loadgen import PERF_ANALYZER, UNSTABLE
from loadtests.locust.run import LOCUSTFILE, RESULTS, tree_cpu_seconds
from loadtests.perf_analyzer.scenarios import write_data


@dataclass(frozen=True, slots=True)
class Row:
    path: str  # "direct" or "gateway"
    tool: str
    mode: str
    concurrency: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int
    client_cores: float
    client_ms_per_request: float
    server_cores: float  # server (+ Envoy for gateway rows)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def perf_analyzer(
    path: str, address: str, mode: str, concurrency: int, data: Path, pids: list[int]
) -> Row:
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        report = Path(tmp, "pa.csv")
        command = [
            str(PERF_ANALYZER),
            *("-m", "digits", "-i", "http" if mode == "REST" else "grpc", "-u", address),
            *("--input-data", str(data)),
            *("--concurrency-range", str(concurrency)),
            "--streaming" if mode == "streaming" else "-a",
            *("--measurement-interval", "3000", "--max-trials", "6", "-f", str(report)),
        ]
        before_client, before_server = _children_cpu(), sum(map(tree_cpu_seconds, pids))
        start = time.monotonic()
        proc = subprocess.run([*command, "--stability-percentage", "20"], capture_output=True)
        if proc.returncode == UNSTABLE:
            proc = subprocess.run([*command, "--stability-percentage", "1000"], capture_output=True)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"perf_analyzer failed: {proc.stdout[-2000:]!r}")
        client = _children_cpu() - before_client
        server = sum(map(tree_cpu_seconds, pids)) - before_server
        level = next(csv.DictReader(report.open()))
    rate = float(level["Inferences/Second"])
    return Row(
        path, "perf_analyzer", mode, concurrency, rate,
        int(level["p50 latency"]) / 1000, int(level["p99 latency"]) / 1000, 0,
        client / wall, 1000 * client / wall / rate, server / wall,
    )  # fmt: skip


def locust(
    path: str,
    host: str,
    grpc_target: str,
    user_class: str,
    concurrency: int,
    seconds: int,
    pids: list[int],
    processes: int = 0,
    contents: str = "raw",
) -> Row:
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        prefix = Path(tmp, "locust")
        command = [
            sys.executable,
            *("-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"),
            *("-u", str(concurrency), "-r", str(concurrency * 10), "-t", f"{seconds}s"),
            *("--host", host, "--grpc-target", grpc_target, "--models", "digits"),
            *("--csv", str(prefix), "--loglevel", "WARNING"),
            *(["--processes", str(processes)] if processes else []),
            *("--contents", contents),
            user_class,
        ]
        before = sum(map(tree_cpu_seconds, pids))
        subprocess.run(command, cwd=launch.ROOT, capture_output=True, timeout=seconds + 120)
        server = sum(map(tree_cpu_seconds, pids)) - before
        document = json.loads(Path(f"{prefix}_summary.json").read_text())
    (summary,) = document["classes"]
    test_s = document["seconds"]
    rate = summary["requests_per_s"]
    mode = {
        "GrpcStreamUser": "streaming",
        "GrpcWebUser": "gRPC-web",
        "RestUser": "REST binary" if contents == "raw" else "REST JSON",
    }.get(user_class, "unary")
    client_cores = document["client_cpu_s"] / test_s
    return Row(
        path, "locust" + (f" x{processes}" if processes else ""), mode, concurrency, rate,
        summary["p50_ms"], summary["p99_ms"], summary["failures"],
        client_cores, 1000 * client_cores / rate if rate else 0.0, server / test_s,
    )  # fmt: skip


def key(row: Row) -> tuple[str, str, str]:
    return row.path, row.tool, row.mode


def median_row(rows: list[Row]) -> Row:
    """The row of median throughput (a real run, not a mix of runs' fields)."""
    middle = statistics.median_low(r.requests_per_s for r in rows)
    return next(r for r in rows if r.requests_per_s == middle)


def table(rows: list[Row]) -> str:
    header = (
        "| path | tool | mode | conc | req/s | p50 ms | p99 ms | failures | client cores "
        "| client CPU ms/req | server cores |"
    )
    lines = [header, "|" + " --- |" * 11]
    for r in rows:
        lines.append(
            f"| {r.path} | {r.tool} | {r.mode} | {r.concurrency} | {r.requests_per_s:,.0f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.failures} | {r.client_cores:.2f} "
            f"| {r.client_ms_per_request:.3f} | {r.server_cores:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.locust.compare", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20, help="per locust row")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole sequence")
    args = parser.parse_args(argv)
    out = RESULTS / time.strftime("%Y%m%d-%H%M%S-compare")
    write_data(out / "data")
    data = out / "data" / "digits.json"
    c, s = args.concurrency, args.seconds
    runs: list[Row] = []
    load_before = os.getloadavg()[0]
    with launch.real_server(1) as server, launch.gateway(server.port) as gateway:
        direct, front = server.address, gateway.url.removeprefix("http://")
        both = [server.pid, gateway.pid]
        steps = [
            lambda: perf_analyzer("direct", direct, "unary", c, data, [server.pid]),
            lambda: locust("direct", gateway.url, direct, "GrpcUser", c, s, [server.pid]),
            lambda: perf_analyzer("direct", direct, "streaming", c, data, [server.pid]),
            lambda: locust("direct", gateway.url, direct, "GrpcStreamUser", c, s, [server.pid]),
            lambda: locust("direct", gateway.url, direct, "GrpcUser", c, s, [server.pid], 2),
            lambda: perf_analyzer("gateway", front, "unary", c, data, both),
            lambda: locust("gateway", gateway.url, front, "GrpcUser", c, s, both),
            lambda: locust("gateway", gateway.url, front, "GrpcWebUser", c, s, both),
            lambda: perf_analyzer("gateway", front, "REST", c, data, both),
            lambda: locust("gateway", gateway.url, front, "RestUser", c, s, both),
            lambda: locust("gateway", gateway.url, front, "RestUser", c, s, both, 0, "typed"),
        ]
        for _ in range(args.repeat):
            for step in steps:
                row = step()
                runs.append(row)
                rate = f"{row.requests_per_s:,.0f} req/s"
                print(f"{row.path} {row.tool} {row.mode}: {rate}", flush=True)
    rows = [median_row([r for r in runs if key(r) == k]) for k in dict.fromkeys(map(key, runs))]
    text = table(rows)
    print(text)
    environment = (
        f"digits, concurrency {c}, {args.repeat} run(s), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    (out / "compare.md").write_text(environment + "\n\n" + text + "\n")
    (out / "compare.json").write_text(json.dumps([asdict(r) for r in runs], indent=2) + "\n")
    print(f"wrote {out}/compare.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
