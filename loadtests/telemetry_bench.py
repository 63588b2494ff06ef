"""What telemetry costs: digits under perf_analyzer with telemetry off, at its defaults, and
with every request traced, in the same run.

    python -m loadtests.telemetry_bench [--rounds 5] [--window-ms 3000] [--concurrency 32]

One server per setting, all started first and idle while another one is measured; the
runs alternate (off, defaults, traced, then the next round in a rotated order) so that
the machine's noise falls on every setting alike. Besides perf_analyzer's figures, each
run reads the server process's CPU time (/proc, every thread) and its own success count
before and after, so the report also gives server CPU time per request: the cost itself,
which other load on the machine disturbs far less than it disturbs throughput. Each round
pairs every setting with the
off run of the same round, seconds apart; the report gives, per setting, the median of
those paired throughput ratios with their interquartile range, and the medians of the
rates and p99 latencies. The figure that counts is the ratio, not the absolute rate of a
shared 2-core machine; on a busy machine, use more rounds rather than longer windows.

Settings:
    off       --metrics false: no metrics endpoint, no RPC interceptor, no spans
    defaults  what `python -m server` does: metrics on (RPC timing interceptor, bucket
              counts), no exporter so no spans, no access log
    traced    defaults plus --trace-exporter otlp --trace-sample-ratio 1 to a receiver in
              this process that accepts and drops the spans (it parses nothing)
    access    defaults plus --access-log-sample 1 (only with --access)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtests import launch

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"
OTLP_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@dataclass
class Result:
    throughput: list[float] = field(default_factory=list)
    p99_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # server CPU time per request


@dataclass(frozen=True)
class Running:
    port: int
    pid: int

    def cpu_s(self) -> float:
        """User + system CPU time of the server process, every thread included."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def answered(self) -> int:
        """Successful requests so far, from the server's own ModelStatistics."""
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            reply = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelStatistics",
                request_serializer=lambda _: b"",  # every model, every version
                response_deserializer=_success_counts,
            )(None, timeout=30)
        return int(reply)


def _success_counts(data: bytes) -> int:
    """Sum of inference_stats.success.count over a ModelStatisticsResponse, read with
    tritonclient's generated messages (the server's own are not importable here)."""
    from tritonclient.grpc import service_pb2

    reply = service_pb2.ModelStatisticsResponse.FromString(data)
    return sum(s.inference_stats.success.count for s in reply.model_stats)


class SpanSink:
    """An OTLP/gRPC TraceService that answers every Export with an empty response."""

    def __init__(self) -> None:
        self.bytes = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(2))
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _export(self, request: bytes, context: object) -> bytes:
        self.bytes += len(request)
        return b""

    def stop(self) -> None:
        self._server.stop(0)


@contextlib.contextmanager
def server(*flags: str) -> Iterator[Running]:
    """The server on digits alone, with `flags`."""
    with launch.real_server(1, "models", "--load-model", "digits", *flags) as started:
        yield Running(started.port, started.pid)


def measure(port: int, concurrency: int, window_ms: int) -> tuple[float, float]:
    """Throughput (infer/s) and p99 latency (us), averaged over three windows."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "pa.csv"
        subprocess.run(
            [
                str(PERF_ANALYZER),
                *("-m", "digits", "-i", "grpc", "-u", f"127.0.0.1:{port}"),
                *("--concurrency-range", f"{concurrency}:{concurrency}"),
                # Any three windows are "stable": the alternation, not perf_analyzer's
                # stability check, is what cancels the noise of a shared machine.
                *("-p", str(window_ms), "--stability-percentage", "1000", "--max-trials", "3"),
                *("-f", str(report)),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
        )
        with report.open() as f:
            row = next(csv.DictReader(f))
    return float(row["Inferences/Second"]), float(row["p99 latency"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--access", action="store_true", help="also measure the access log")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args(argv)
    if not PERF_ANALYZER.exists():
        print("perf_analyzer is missing: run `make perf-analyzer`", file=sys.stderr)
        return 2
    sink = SpanSink()
    settings: dict[str, tuple[str, ...]] = {
        "off": ("--metrics", "false"),
        "defaults": (),
        "traced": (
            *("--trace-exporter", "otlp", "--trace-sample-ratio", "1"),
            *("--trace-otlp-endpoint", f"http://127.0.0.1:{sink.port}"),
        ),
    }
    if args.access:
        settings["access"] = ("--access-log-sample", "1")
    results = {name: Result() for name in settings}
    try:
        with contextlib.ExitStack() as stack:
            servers = {n: stack.enter_context(server(*flags)) for n, flags in settings.items()}
            names = list(settings)
            for round_ in range(args.rounds):
                order = names[round_ % len(names) :] + names[: round_ % len(names)]
                for name in order:
                    running = servers[name]
                    cpu, answered = running.cpu_s(), running.answered()
                    rate, p99 = measure(running.port, args.concurrency, args.window_ms)
                    cpu_us = (running.cpu_s() - cpu) / (running.answered() - answered) * 1e6
                    results[name].throughput.append(rate)
                    results[name].p99_us.append(p99)
                    results[name].cpu_us.append(cpu_us)
                    print(
                        f"round {round_ + 1} {name:9s} {rate:8.0f} infer/s  p99 {p99:7.0f} us"
                        f"  server CPU {cpu_us:6.1f} us/request",
                        flush=True,
                    )
    finally:
        sink.stop()
    base = results["off"]
    base_p99 = statistics.median(base.p99_us)
    summary = {}
    print(f"\ndigits, c={args.concurrency}, {args.rounds} alternating rounds, medians:")
    for name, result in results.items():
        rate = statistics.median(result.throughput)
        p99 = statistics.median(result.p99_us)
        paired = [t / b for t, b in zip(result.throughput, base.throughput, strict=True)]
        quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else paired * 3
        cpu = statistics.median(result.cpu_us)
        cpu_ratio = cpu / statistics.median(base.cpu_us)
        summary[name] = {
            "throughput": rate,
            "p99_us": p99,
            "paired_throughput_ratio": statistics.median(paired),
            "paired_ratio_iqr": [quartiles[0], quartiles[2]],
            "p99_ratio": p99 / base_p99,
            "cpu_us_per_request": cpu,
            "cpu_ratio": cpu_ratio,
            "paired_ratios": paired,
            "cpu_us": result.cpu_us,
        }
        print(
            f"  {name:9s} throughput {statistics.median(paired):.3f}x off (paired; IQR "
            f"{quartiles[0]:.3f}..{quartiles[2]:.3f}); server CPU {cpu:6.1f} us/request = "
            f"{cpu_ratio:.3f}x off; medians {rate:6.0f} infer/s, p99 {p99:7.0f} us "
            f"({p99 / base_p99:.2f}x off)"
        )
    print(f"  span bytes received while traced: {sink.bytes}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
