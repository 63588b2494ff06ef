"""h2load (Debian's nghttp2-client) as the benchmarks' load tool for raw HTTP/2 and
HTTP/1.1: one gRPC or REST body sent over and over, closed loop, with each watched
process's CPU time per reply."""

from __future__ import annotations

import re
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference import grpc_service_pb2 as pb
from loadtests import launch

INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


@dataclass(frozen=True, slots=True)
class Load:
    """One h2load target: where, what body, which headers, HTTP/1.1 or h2c."""

    url: str
    body: Path
    headers: tuple[str, ...]
    h1: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    throughput: float  # replies/s
    succeeded: int  # 2xx replies; gRPC errors hide in trailers
    failed: int  # no reply, or not 2xx
    cpu_us: tuple[float, ...]  # each watched process's CPU time per reply


def grpc_request(model: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A typed-contents ModelInferRequest, gRPC-framed (flag byte, big-endian length)."""
    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        datatype = "FP32" if array.dtype == np.float32 else "INT64"
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        field = (
            tensor.contents.fp32_contents if datatype == "FP32" else tensor.contents.int64_contents
        )
        field.extend(array.ravel().tolist())
    message = request.SerializeToString()
    return struct.pack(">BI", 0, len(message)) + message


def run(load: Load, clients: int, seconds: int, pids: tuple[int, ...], streams: int = 1) -> Outcome:
    """`clients` connections with `streams` calls in flight on each, for `seconds` after a
    second of warm-up; `pids` are the processes whose CPU time is read around it."""
    command = [
        "h2load",
        *("-D", str(seconds), "--warm-up-time", "1"),
        *("-c", str(clients), "-m", str(streams), "-t", "1"),
        *("-d", str(load.body)),
        *(item for header in load.headers for item in ("-H", header)),
        *(["--h1"] if load.h1 else []),
        load.url,
    ]
    before = [launch.cpu_seconds(pid) for pid in pids]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    spent = [launch.cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed: {' '.join(command)}\n{out.stdout}{out.stderr}")
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out.stdout)
    done = re.search(r"\d+ succeeded, (\d+) failed", out.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out.stdout)
    if rate is None or done is None or codes is None:
        raise RuntimeError(f"unexpected h2load output:\n{out.stdout}")
    ok = int(codes.group(1))
    failed = int(done.group(1)) + sum(int(n) for n in codes.groups()[1:])
    per_reply = 1e6 / max(ok, 1)  # warm-up replies count too: a slight overestimate
    return Outcome(float(rate.group(1)), ok, failed, tuple(s * per_reply for s in spent))
