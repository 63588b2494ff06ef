"""A Python closed-loop client: the second load generator next to perf_analyzer, so that
every ratio of issue 15 is measured with two clients.

    python -m loadtests.closed_loop [--concurrency 1,32] [--rounds 3] [--seconds 8]

`--concurrency` callers on one grpc.aio channel (uvloop) each send the next digits
ModelInfer (raw contents) as soon as their answer arrives. The no-op server (ceiling A)
and the server (digits) are started once and measured in alternating rounds; the report
gives each server's median round, the ratio to the no-op server and, at each concurrency,
the p50 difference (loadtests/results/closed_loop.txt). `closed_loop` is also the client
of `loadtests.pipeline_bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence

import grpc
import numpy as np
import uvloop
from sklearn.datasets import load_digits

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from loadtests import launch

WARM_UP_S = 2.0
RESULT = launch.ROOT / "loadtests" / "results" / "closed_loop.txt"


async def closed_loop(
    address: str, requests: Sequence[pb.ModelInferRequest], concurrency: int, seconds: float
) -> tuple[float, list[float]]:
    """`concurrency` callers, each sending the next request as its answer arrives; returns
    the answers per second and their latencies (ms) after a warm-up of WARM_UP_S."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from, end = start + WARM_UP_S, start + WARM_UP_S + seconds
        latencies: list[float] = []

        async def caller(index: int) -> None:
            while (now := loop.time()) < end:
                request = requests[index % len(requests)]
                index += concurrency
                sent = time.perf_counter()  # uvloop's clock counts whole milliseconds
                reply = await stub.ModelInfer(request, timeout=60)
                if not reply.outputs:
                    raise RuntimeError(f"{request.model_name}: a reply without outputs")
                if now >= measure_from:
                    latencies.append((time.perf_counter() - sent) * 1e3)

        await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return len(latencies) / seconds, latencies


def digits_requests() -> list[pb.ModelInferRequest]:
    requests = []
    for row in load_digits().data[:64].astype(np.float32):
        request = pb.ModelInferRequest(model_name="digits")
        request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
        request.raw_input_contents.append(row.tobytes())
        requests.append(request)
    return requests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.closed_loop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--concurrency", default="1,32", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    requests = digits_requests()
    measured: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with contextlib.ExitStack() as stack:
        digits_server = launch.real_server(1, "models", "--load-model", "digits")
        servers = {
            "noop": stack.enter_context(launch.noop_server(1)),
            "server": stack.enter_context(digits_server),
        }
        for round_ in range(1, args.rounds + 1):
            for concurrency in levels:
                for name, server in servers.items():
                    rate, latencies = uvloop.run(
                        closed_loop(server.address, requests, concurrency, args.seconds)
                    )
                    p50 = statistics.median(latencies)
                    measured.setdefault((name, concurrency), []).append((rate, p50))
                    print(
                        f"round {round_} {name} c={concurrency}: {rate:,.0f} req/s, "
                        f"p50 {p50:.2f} ms",
                        file=sys.stderr,
                        flush=True,
                    )
    lines = [
        f"digits, Python closed loop, median of {args.rounds} rounds of {args.seconds:g} s",
        f"{'conc':>5} {'noop req/s':>11} {'server req/s':>13} {'x noop':>7} {'p50 +ms':>8}",
    ]
    for concurrency in levels:
        noop = sorted(measured["noop", concurrency])[(args.rounds - 1) // 2]
        served = sorted(measured["server", concurrency])[(args.rounds - 1) // 2]
        lines.append(
            f"{concurrency:>5} {noop[0]:>11,.0f} {served[0]:>13,.0f} {served[0] / noop[0]:>7.2f}"
            f" {served[1] - noop[1]:>8.2f}"
        )
    print("\n".join(lines))
    RESULT.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
