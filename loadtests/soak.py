"""`make soak`: a long run at about 80% of capacity, watching memory, errors and latency.

    python -m loadtests.soak [--seconds 600] [--load 0.8] [--workers 1]

1. Starts the server as users do (`python -m server`) on the default models.
2. Measures capacity: a closed loop of `--concurrency` clients on the request mix (mostly
   digits, some text_direction, a little minilm) for `--capacity-seconds`.
3. Runs an open loop (Poisson arrivals) at `--load` times that rate for `--seconds`,
   checking every answer against the first answer to the same input, sampling the
   server's RSS (/proc, workers included) every `--interval` seconds.
4. Prints a table per interval and a summary, writes loadtests/results/soak-<time>.json
   (git ignores it), and exits 0 only if there were no errors and RSS grew less than
   `--max-growth` (5%) from the end of the warm-up (the first fifth, at least one
   interval) to the end. RSS is compared as the median of three samples at each end.

Latency is measured from each request's scheduled start, so a client or server that
falls behind shows up in it. The client shares the machine with the server, as in
`make bench`; capacity is what the two achieve together. No server internals are used:
only the process, its JSON log and gRPC through tritonclient's generated stubs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
import uvloop
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "loadtests" / "results"
# By request count. minilm is light in count but heavy in compute (a row of 128 tokens takes
# tens of milliseconds on one core): 2% of the requests are a third of the compute.
MIX = {"digits": 0.88, "text_direction": 0.10, "minilm": 0.02}
INPUTS_PER_MODEL = 8
MAX_OUTSTANDING = 4096  # the open loop never has more in flight; beyond it, "shed"
TIMEOUT_S = 30.0
START_TIMEOUT_S = 120.0

# --- the requests ------------------------------------------------------------------------------


def _digits(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"input": rng.integers(0, 17, (1, 64)).astype(np.float32)}


def _text_direction(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"x": rng.uniform(-1, 1, (1, 3, 48, 192)).astype(np.float32)}


def _minilm(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Token ids as the shipped tokenizer gives them: [CLS] words [SEP], padded to 128."""
    words = rng.integers(1996, 29000, int(rng.integers(3, 20)))
    ids = np.zeros((1, 128), np.int64)
    ids[0, : len(words) + 2] = [101, *words, 102]
    mask = (ids != 0).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


BUILDERS = {"digits": _digits, "text_direction": _text_direction, "minilm": _minilm}
DATATYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


def build_requests(seed: int = 0) -> dict[str, list[service_pb2.ModelInferRequest]]:
    rng = np.random.default_rng(seed)
    requests: dict[str, list[service_pb2.ModelInferRequest]] = {}
    for model, build in BUILDERS.items():
        for n in range(INPUTS_PER_MODEL):
            request = service_pb2.ModelInferRequest(model_name=model, id=str(n))
            for name, array in build(rng).items():
                request.inputs.add(name=name, datatype=DATATYPES[array.dtype], shape=array.shape)
                request.raw_input_contents.append(array.tobytes())
            requests.setdefault(model, []).append(request)
    return requests


def outputs(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    found = {}
    for index, tensor in enumerate(response.outputs):
        dtype = {"FP32": np.float32, "INT64": np.int64}[tensor.datatype]
        raw = response.raw_output_contents[index]
        found[tensor.name] = np.frombuffer(raw, dtype).reshape(tuple(tensor.shape))
    return found


class References:
    """The first answer to each input; later answers must match it (batching may move
    floating point a little, so floats compare with a tolerance)."""

    def __init__(self) -> None:
        self._first: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def check(self, model: str, request_id: str, response: service_pb2.ModelInferResponse) -> bool:
        got = outputs(response)
        first = self._first.setdefault((model, request_id), got)
        if sorted(first) != sorted(got):
            return False
        for name, value in first.items():
            other = got[name]
            if value.shape != other.shape:
                return False
            if value.dtype.kind == "f":
                if not np.allclose(value, other, rtol=1e-3, atol=1e-4):
                    return False
            elif not np.array_equal(value, other):
                return False
        return True


# --- the server ----------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int
    errors_logged: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=50))

    def pids(self) -> list[int]:
        """The server and, under --workers, its worker processes."""
        pids = [self.process.pid]
        try:
            for task in os.scandir(f"/proc/{self.process.pid}/task"):
                with open(f"{task.path}/children") as children:
                    pids += [int(child) for child in children.read().split()]
        except FileNotFoundError:
            pass
        return pids

    def rss_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as status:
                    for line in status:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except FileNotFoundError:
                continue
        return total


def start_server(workers: int) -> Server:
    command = [
        sys.executable,
        *("-m", "server", "--model-repository", "models", "--host", "127.0.0.1"),
        *("--grpc-port", "0", "--workers", str(workers)),
        *(arg for model in MIX for arg in ("--load-model", model)),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    found: queue.Queue[int | None] = queue.Queue()
    server = Server(process, 0)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            server.tail.append(line)
            if '"event": "listening"' in line:  # workers say "worker_listening"
                found.put(int(json.loads(line)["grpc_port"]))
            if '"level": "ERROR"' in line or '"level": "CRITICAL"' in line or "Traceback" in line:
                server.errors_logged += 1
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = found.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        port = None
    if port is None:
        stop_server(server)
        raise RuntimeError("the server did not start:\n" + "".join(server.tail))
    server.port = port
    return server


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    return server.process.returncode


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Window:
    """What happened in one sampling interval."""

    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    shed: int = 0

    def add(self, model: str, latency_ms: float) -> None:
        self.latencies_ms.setdefault(model, []).append(latency_ms)

    def count(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())


def percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    array = np.asarray(values)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(array.max())}


class Load:
    def __init__(self, address: str, channels: int = 4) -> None:
        self.requests = build_requests()
        self.references = References()
        self._channels = [
            grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        self._stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in self._channels]
        self._next = 0
        self._random = random.Random(1)
        self.window = Window()
        self.outstanding = 0

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    def pick(self) -> tuple[str, service_pb2.ModelInferRequest]:
        model = self._random.choices(list(MIX), weights=list(MIX.values()))[0]
        return model, self._random.choice(self.requests[model])

    async def one(self, model: str, request: service_pb2.ModelInferRequest, start: float) -> None:
        """Send one request; record its latency from `start` (loop clock) or its error."""
        self.outstanding += 1
        stub = self._stubs[self._next % len(self._stubs)]
        self._next += 1
        try:
            response = await stub.ModelInfer(request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            self.window.errors[f"{model}: {error.code().name}: {error.details()}"[:160]] += 1
        else:
            if self.references.check(model, request.id, response):
                self.window.add(model, (asyncio.get_running_loop().time() - start) * 1000)
            else:
                self.window.errors[f"{model}: wrong answer"] += 1
        finally:
            self.outstanding -= 1

    async def closed_loop(self, concurrency: int, seconds: float) -> float:
        """Requests per second that `concurrency` clients achieve on the mix."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        async def client() -> int:
            done = 0
            while loop.time() < end:
                model, request = self.pick()
                await self.one(model, request, loop.time())
                done += 1
            return done

        started = loop.time()
        counts = await asyncio.gather(*(client() for _ in range(concurrency)))
        return sum(counts) / (loop.time() - started)

    async def open_loop(self, rate: float, seconds: float) -> None:
        """Poisson arrivals at `rate` per second for `seconds`, whatever the answers do."""
        loop = asyncio.get_running_loop()
        arrivals = random.Random(2)
        tasks: set[asyncio.Task[None]] = set()
        now = loop.time()
        end = now + seconds
        due = now
        while due < end:
            while due <= loop.time():
                if self.outstanding >= MAX_OUTSTANDING:
                    self.window.shed += 1
                else:
                    model, request = self.pick()
                    task = loop.create_task(self.one(model, request, due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                due += arrivals.expovariate(rate)
            await asyncio.sleep(max(due - loop.time(), 0.0))
        if tasks:
            await asyncio.wait(tasks, timeout=TIMEOUT_S + 5)


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    requests: int
    errors: int
    shed: int
    p50_ms: float
    p99_ms: float


async def soak(args: argparse.Namespace, server: Server) -> dict[str, object]:
    load = Load(f"127.0.0.1:{server.port}")
    try:
        # Warm the connections and record reference answers.
        for model, requests in load.requests.items():
            for request in requests:
                await load.one(model, request, asyncio.get_running_loop().time())
        load.window = Window()
        capacity = await load.closed_loop(args.concurrency, args.capacity_seconds)
        capacity_window, load.window = load.window, Window()
        rate = capacity * args.load
        print(
            f"capacity {capacity:.0f} req/s on the mix {MIX} at concurrency {args.concurrency}; "
            f"soaking at {rate:.0f} req/s for {args.seconds:.0f} s",
            flush=True,
        )
        samples: list[Sample] = []
        totals = Window()
        started = time.monotonic()

        def sample() -> None:
            window, load.window = load.window, Window()
            for model, values in window.latencies_ms.items():
                totals.latencies_ms.setdefault(model, []).extend(values)
            totals.errors.update(window.errors)
            totals.shed += window.shed
            every = [v for values in window.latencies_ms.values() for v in values]
            p = percentiles(every)
            samples.append(
                Sample(
                    round(time.monotonic() - started, 1),
                    round(server.rss_bytes() / 2**20, 1),
                    window.count(),
                    sum(window.errors.values()),
                    window.shed,
                    round(p["p50"], 2),
                    round(p["p99"], 2),
                )
            )
            s = samples[-1]
            print(
                f"{s.t_s:8.1f} {s.rss_mib:10.1f} {s.requests:9d} {s.errors:7d} {s.shed:6d}"
                f" {s.p50_ms:9.2f} {s.p99_ms:9.2f}",
                flush=True,
            )

        print(f"{'t (s)':>8} {'RSS (MiB)':>10} {'requests':>9} {'errors':>7} {'shed':>6}"
              f" {'p50 (ms)':>9} {'p99 (ms)':>9}")  # fmt: skip
        sample()  # t = 0: the RSS before the soak

        async def sampler() -> None:
            while True:
                await asyncio.sleep(args.interval)
                sample()

        sampling = asyncio.get_running_loop().create_task(sampler())
        try:
            await load.open_loop(rate, args.seconds)
        finally:
            sampling.cancel()
        sample()
    finally:
        await load.close()
    return summarize(args, capacity, rate, samples, totals, capacity_window, server)


def summarize(
    args: argparse.Namespace,
    capacity: float,
    rate: float,
    samples: list[Sample],
    totals: Window,
    capacity_window: Window,
    server: Server,
) -> dict[str, object]:
    warm = max(1, len(samples) // 5)
    start_rss = statistics.median(s.rss_mib for s in samples[warm : warm + 3])
    end_rss = statistics.median(s.rss_mib for s in samples[-3:])
    growth = (end_rss - start_rss) / start_rss
    # A leak is a slope; a step that stays flat afterwards is a new high-water mark (a
    # burst's buffers, which the allocator keeps).
    after = samples[warm:]
    slope = 0.0
    if len(after) >= 2 and after[-1].t_s > after[0].t_s:
        slope = float(np.polyfit([s.t_s for s in after], [s.rss_mib for s in after], 1)[0]) * 60
    served = sum(len(v) for v in totals.latencies_ms.values())
    errors = sum(totals.errors.values())
    every = [v for values in totals.latencies_ms.values() for v in values]
    result: dict[str, object] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": args.seconds,
        "workers": args.workers,
        "mix": MIX,
        "capacity_rps": round(capacity, 1),
        "capacity_errors": dict(capacity_window.errors),
        "target_rps": round(rate, 1),
        "achieved_rps": round(served / args.seconds, 1),
        "requests": served,
        "errors": errors,
        "error_kinds": dict(totals.errors),
        "shed_by_client": totals.shed,
        "server_error_log_lines": server.errors_logged,
        "rss_after_warmup_mib": start_rss,
        "rss_at_end_mib": end_rss,
        "rss_growth_percent": round(growth * 100, 2),
        "rss_slope_mib_per_min": round(slope, 2),
        "latency_ms": {k: round(v, 2) for k, v in percentiles(every).items()},
        "latency_ms_by_model": {
            model: {k: round(v, 2) for k, v in percentiles(values).items()}
            for model, values in sorted(totals.latencies_ms.items())
        },
        "samples": [asdict(s) for s in samples],
    }
    result["passed"] = (
        errors == 0
        and totals.shed == 0
        and server.errors_logged == 0
        and growth * 100 < args.max_growth
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="length of the soak")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of capacity")
    parser.add_argument("--interval", type=float, default=10.0, help="RSS sampling interval")
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32, help="for the capacity run")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-growth", type=float, default=5.0, help="RSS growth target, %%")
    args = parser.parse_args(argv)

    # A SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so that the server is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    server = start_server(args.workers)
    try:
        result = uvloop.run(soak(args, server))
    finally:
        exit_code = stop_server(server)
    result["server_exit_code"] = exit_code
    result["passed"] = bool(result["passed"]) and exit_code == 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    latency = result["latency_ms"]
    print(
        f"\n{result['requests']} requests at {result['achieved_rps']} req/s "
        f"(target {result['target_rps']}, capacity {result['capacity_rps']}); "
        f"errors {result['errors']}, shed {result['shed_by_client']}, "
        f"server error lines {result['server_error_log_lines']}, exit {exit_code}\n"
        f"latency ms: {latency}\n"
        f"by model: {result['latency_ms_by_model']}\n"
        f"RSS {result['rss_after_warmup_mib']} MiB after warm-up -> "
        f"{result['rss_at_end_mib']} MiB at the end ({result['rss_growth_percent']:+.2f}%, "
        f"target < {args.max_growth}%; slope {result['rss_slope_mib_per_min']:+.2f} MiB/min)\n"
        f"{'PASSED' if result['passed'] else 'FAILED'}; wrote {path.relative_to(ROOT)}"
    )
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
