"""`--workers 2` against two no-op processes, with the load spread over few or many
connections (issue 15: workers that scale).

    python -m loadtests.workers_bench [--rounds 2] [--seconds 5] [--in-flight 128]

perf_analyzer keeps its calls on three connections, and SO_REUSEPORT gives each
connection to one process for its whole life, so a two-process row measured with it
depends on how three connections happened to split. h2load sets the number of
connections: here `--in-flight` digits ModelInfer calls (h2c, typed contents) are spread
over 4, 32 or 128 connections, against the no-op server and the server, with one and two
processes, each served row right after its no-op row, in `--rounds` rounds (medians).
Each row gives the share of the CPU time each process got (how evenly the kernel spread
the connections) and the CPU time per request of all processes together.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

from loadtests import h2load, launch
from loadtests.h2load import GRPC_HEADERS, INFER, Load, Outcome

CONNECTIONS = (4, 32, 128)
PROCESSES = (1, 2)
RESULT = Path(__file__).parent / "results" / "workers.txt"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.workers_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=128)
    args = parser.parse_args(argv)
    measured: dict[tuple[str, int, int], list[Outcome]] = defaultdict(list)
    with (
        tempfile.TemporaryDirectory(prefix="workers-bench-") as tmp,
        launch.noop_and_real(PROCESSES) as started,
    ):
        body = Path(tmp) / "digits.grpc"
        body.write_bytes(
            h2load.grpc_request("digits", {"input": load_digits().data[:1].astype(np.float32)})
        )
        for round_ in range(1, args.rounds + 1):
            for processes in PROCESSES:
                for connections in CONNECTIONS:
                    for kind in ("noop", "server"):
                        server = started[kind, processes]
                        load = Load(f"http://{server.address}{INFER}", body, GRPC_HEADERS, False)
                        pids = tuple(launch.listener_pids(server.port))
                        streams = max(1, args.in_flight // connections)
                        outcome = h2load.run(load, connections, args.seconds, pids, streams)
                        if outcome.failed:
                            print(f"{kind} x{processes}: {outcome.failed} failed", file=sys.stderr)
                            return 1
                        measured[kind, processes, connections].append(outcome)
                        print(
                            f"round {round_} {kind} x{processes} {connections} connections: "
                            f"{outcome.throughput:,.0f} req/s",
                            file=sys.stderr,
                            flush=True,
                        )
    text = report(measured, args)
    print(text)
    RESULT.write_text(text)
    return 0


def report(measured: dict[tuple[str, int, int], list[Outcome]], args: argparse.Namespace) -> str:
    def median(key: tuple[str, int, int]) -> Outcome:
        runs = sorted(measured[key], key=lambda o: o.throughput)
        return runs[(len(runs) - 1) // 2]

    lines = [
        f"digits, {args.in_flight} calls in flight over N connections (h2load, h2c), "
        f"{args.seconds} s each, median of {args.rounds} rounds",
        f"{'server':<7}{'procs':>6}{'conns':>6}{'req/s':>9}{'x noop':>8}{'x one proc':>11}"
        f"{'CPU/req':>10}  CPU share per process",
    ]
    for kind in ("noop", "server"):
        for processes in PROCESSES:
            for connections in CONNECTIONS:
                row = median((kind, processes, connections))
                noop = median(("noop", processes, connections)).throughput
                one = median((kind, 1, connections)).throughput
                total = sum(row.cpu_us)
                shares = "/".join(f"{100 * us / total:.0f}%" for us in row.cpu_us)
                lines.append(
                    f"{kind:<7}{processes:>6}{connections:>6}{row.throughput:>9,.0f}"
                    f"{row.throughput / noop:>8.2f}{row.throughput / one:>11.2f}"
                    f"{total:>7,.0f} us  {shares}"
                )
    lines.append(
        "x noop: against the no-op server with as many processes and connections; x one proc: "
        "against the same server with one process. CPU/req: all processes, all threads."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
