"""`python -m server.probe`: one grpc.health.v1 Check, turned into an exit status.

    python -m server.probe --address 127.0.0.1:8001 --service "" --timeout 2

Exits 0 when the service is SERVING and 1 otherwise (NOT_SERVING, an unknown service, no
answer within the timeout), with one line on stderr saying why. It is the container's
HEALTHCHECK (docs/deployment.md); Kubernetes has gRPC probes of its own and needs no
program. Service "" is the whole server (ready once every model has loaded), a model's
name is that model.

It imports grpc and grpc_health only, so that a probe every few seconds costs a fraction
of a second and nothing of the server's start-up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def check(address: str, service: str, timeout: float) -> str | None:
    """None if `service` at `address` answers SERVING within `timeout` seconds, else why not."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            details: str = error.details() or ""  # type: ignore[attr-defined]
            return f"{code.name}: {details}" if details else code.name
    if reply.status == SERVING:
        return None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server.probe", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--address", default="127.0.0.1:8001", help="HOST:PORT of the server")
    parser.add_argument("--service", default="", help='health service name; "" is the server')
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reason = check(args.address, args.service, args.timeout)
    if reason is None:
        return 0
    print(f"probe: {args.address} service {args.service!r}: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
