"""Throughput of 1, 2, 3 ... replicas behind one Envoy, and the CPU each request costs the
gateway and the replicas (docs/deployment.md, "Scale-out with Envoy").

    python -m loadtests.cluster_bench --replicas 1,2,3 --concurrency 32

perf_analyzer sends digits over gRPC to the gateway, as `make cluster` runs it (one server
process per replica, on its own port). CPU per request is each process's CPU time over
the run divided by the requests Envoy forwarded in it (its upstream_rq_total counter),
so it holds on a shared machine where requests/s moves with whatever else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway import RunningGateway, start_gateway
from gateway.admin import Admin
from gateway.build import build
from loadtests import launch
from loadtests.loadgen import Measurement, Stability, measure
from loadtests.workloads import SMALL, WORKLOADS

STABILITY = Stability(15, 5)
FALLBACK = Stability(100, 3)


@dataclass(frozen=True, slots=True)
class Row:
    replicas: int
    measured: Measurement
    requests: int  # forwarded by Envoy during the run
    seconds: float
    server_us: float  # all replicas' CPU time per request
    envoy_us: float
    client_us: float  # perf_analyzer's, on the same cores


def _forwarded(gateway: RunningGateway) -> int:
    text = Admin(gateway.admin_address).get("/stats?filter=^cluster.inference.upstream_rq_total$")
    return int(text.rsplit(":", 1)[1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _cluster(
    replicas: int, repository: Path, build_dir: Path
) -> Iterator[tuple[list[int], RunningGateway]]:
    """`replicas` servers, each one process on its own port, behind one gateway."""
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(launch.real_server(1, repository)) for _ in range(replicas)]
        gateway = stack.enter_context(
            start_gateway(*(s.port for s in servers), build_dir=build_dir)
        )
        yield [s.pid for s in servers], gateway


def _measure(replicas: int, concurrency: int, repository: Path, build_dir: Path) -> Row:
    with _cluster(replicas, repository, build_dir) as (server_pids, gateway):
        envoy_pid = launch.listener_pid(gateway.http_port)
        pids = [envoy_pid, *server_pids]
        before = [launch.cpu_seconds(pid) for pid in pids]
        forwarded, started = _forwarded(gateway), time.monotonic()
        children = _children_cpu()  # perf_analyzer is the one child that ends meanwhile
        measured = measure(
            gateway.address, WORKLOADS[SMALL], "unary", concurrency, STABILITY, FALLBACK
        )
        client = _children_cpu() - children
        requests = _forwarded(gateway) - forwarded
        seconds = time.monotonic() - started
        used = [launch.cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    return Row(
        replicas=replicas,
        measured=measured,
        requests=requests,
        seconds=seconds,
        server_us=sum(used[1:]) / requests * 1e6,
        envoy_us=used[0] / requests * 1e6,
        client_us=client / requests * 1e6,
    )


def _report(rows: list[Row], concurrency: int) -> list[str]:
    base = rows[0].measured.throughput
    lines = [
        f"digits, unary gRPC through Envoy, perf_analyzer -a c={concurrency}, 1 process a replica",
        "| replicas | infer/s | x 1 replica | p50 ms | p99 ms | CPU us/req: servers | Envoy "
        "| perf_analyzer |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        m = row.measured
        lines.append(
            f"| {row.replicas} | {m.throughput:,.0f}{'' if m.stable else ' (unstable)'} "
            f"| {m.throughput / base:.2f} | {m.p50_ms:.2f} | {m.p99_ms:.2f} "
            f"| {row.server_us:.0f} | {row.envoy_us:.0f} | {row.client_us:.0f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated counts")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        repository = Path(tmp, "models")
        shutil.copytree(launch.ROOT / "models" / SMALL, repository / SMALL)
        build_dir = build(Path(tmp, "gateway")).descriptor_path.parent
        rows = [
            _measure(int(n), args.concurrency, repository, build_dir)
            for n in args.replicas.split(",")
        ]
    print("\n".join(_report(rows, args.concurrency)))
    print(
        json.dumps(
            [
                {"replicas": r.replicas, "requests": r.requests, "seconds": round(r.seconds, 1)}
                for r in rows
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
