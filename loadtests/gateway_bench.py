"""REST and gRPC-web through the gateway, against direct gRPC, on digits (`make bench-gateway`).

One load tool for all three rows, so that the ratios compare the paths and not the tools:
h2load sends the same ModelInferRequest as a gRPC call straight to the server (h2c), as
proto3 JSON to the REST path and as a binary gRPC-web call through Envoy (HTTP/1.1, as
browsers and REST clients mostly send). The targets are issue 4's: REST at least 0.5x and
gRPC-web at least 0.6x direct gRPC throughput, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import json_format
from sklearn.datasets import load_digits

from gateway import start_gateway
from gateway.build import build
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from loadtests import launch

METHOD = "/inference.GRPCInferenceService/ModelInfer"
TARGETS = {"rest": 0.5, "grpc-web": 0.6}
RESULT = Path(__file__).parent / "results" / "gateway.txt"


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    throughput: float
    succeeded: int  # HTTP-level; gRPC errors hide in trailers, hence the statistics check
    failed: int


def _request() -> pb.ModelInferRequest:
    image = load_digits().data[:1].astype(np.float32)
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    request.inputs[0].contents.fp32_contents.extend(image.ravel().tolist())
    return request


def _framed(message: bytes) -> bytes:
    """gRPC and gRPC-web length-prefixed framing: flag byte, 4-byte big-endian length."""
    return struct.pack(">BI", 0, len(message)) + message


def _h2load(
    url: str, body: Path, headers: Sequence[str], h1: bool, args: argparse.Namespace
) -> Row:
    command = [
        "h2load",
        *("-D", str(args.seconds), "--warm-up-time", "1"),
        *("-c", str(args.concurrency), "-m", "1", "-t", "1"),
        *("-d", str(body)),
        *(item for header in headers for item in ("-H", header)),
        *(["--h1"] if h1 else []),
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, timeout=args.seconds + 60)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed: {' '.join(command)}\n{out.stdout}{out.stderr}")
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out.stdout)
    done = re.search(r"(\d+) succeeded, (\d+) failed", out.stdout)
    if rate is None or done is None:
        raise RuntimeError(f"unexpected h2load output:\n{out.stdout}")
    return Row(url, float(rate.group(1)), int(done.group(1)), int(done.group(2)))


def _successes(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        reply = stub.ModelStatistics(pb.ModelStatisticsRequest(name="digits"), timeout=10)
    return sum(s.inference_stats.success.count for s in reply.model_stats)


def run(args: argparse.Namespace) -> int:
    request = _request()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        work = Path(tmp)
        (work / "grpc.bin").write_bytes(_framed(request.SerializeToString()))
        rest = json_format.MessageToDict(request, preserving_proto_field_name=True)
        del rest["model_name"]  # it comes from the path
        (work / "rest.json").write_text(json.dumps(rest))
        outputs = build(work / "gateway")
        with (
            launch.real_server(1) as server,
            start_gateway(server.port, build_dir=outputs.descriptor_path.parent) as gateway,
        ):
            grpc_headers = ["content-type: application/grpc", "te: trailers"]
            rows = {
                "grpc": _h2load(
                    f"http://{server.address}{METHOD}", work / "grpc.bin", grpc_headers, False, args
                ),
                "rest": _h2load(
                    f"{gateway.url}/v2/models/digits/infer",
                    work / "rest.json",
                    ["content-type: application/json"],
                    True,
                    args,
                ),
                "grpc-web": _h2load(
                    f"{gateway.url}{METHOD}",
                    work / "grpc.bin",
                    ["content-type: application/grpc-web+proto", "x-grpc-web: 1"],
                    True,
                    args,
                ),
            }
            served = _successes(server.address)
    sent = sum(row.succeeded for row in rows.values())
    if served < sent:  # h2load's warm-up requests make served larger
        print(f"the server answered {served} requests successfully, h2load sent {sent}")
        return 1
    direct = rows["grpc"].throughput
    lines = [
        f"digits through the gateway, concurrency {args.concurrency}, {args.seconds} s each",
        f"{'path':<9} {'req/s':>8} {'failed':>6} {'x gRPC':>7} {'wanted':>7} met",
    ]
    for name, row in rows.items():
        ratio = row.throughput / direct
        wanted = TARGETS.get(name)
        met = "-" if wanted is None else ("yes" if ratio >= wanted else "NO")
        want = "-" if wanted is None else f">= {wanted}"
        lines.append(
            f"{name:<9} {row.throughput:>8,.0f} {row.failed:>6} {ratio:>7.2f} {want:>7} {met}"
        )
    print("\n".join(lines))
    RESULT.write_text("\n".join(lines) + "\n")
    return 1 if any(row.failed for row in rows.values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=5)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
