"""`python -m gateway build | render | run`: build the gateway's files, show or run its Envoy.

    python -m gateway build
    python -m gateway run --listen-port 8000 --upstream 127.0.0.1:8001

`run` prints one JSON line to stdout once the listener is bound, e.g.
{"event": "gateway_listening", "http_port": 8000, "admin_port": 9901, ...},
and stops Envoy on SIGINT or SIGTERM.
"""

import argparse
import json
import mimetypes
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from gateway.config import render
from gateway.paths import BUILD_DIR
from gateway.process import Gateway, GatewayError, RunningGateway
from gateway.settings import (
    DEFAULT_CORS_ORIGINS,
    DEFAULT_HEALTH_CHECK_INTERVAL_S,
    DEFAULT_UPSTREAMS,
    GatewaySettings,
    ListenerTls,
    StaticFile,
    Upstream,
    UpstreamTls,
)
from gateway.tls import write_secrets


def _upstream(value: str) -> Upstream:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return Upstream(host, int(port))


def _static_file(value: str) -> StaticFile:
    url_path, sep, file = value.partition("=")
    if not sep or not url_path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected /URL/PATH=FILE, got {value!r}")
    content_type = mimetypes.guess_type(file)[0] or "application/octet-stream"
    return StaticFile(url_path, Path(file).resolve(), content_type)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_cmd = commands.add_parser("build", help="build the descriptor set and OpenAPI document")
    build_cmd.add_argument("--out", type=Path, default=BUILD_DIR, help="output directory")
    for name, help_text in (("render", "print the Envoy configuration"), ("run", "run Envoy")):
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("--listen-host", default="127.0.0.1")
        cmd.add_argument("--listen-port", type=int, default=8000, help="0: any free port")
        cmd.add_argument(
            "--upstream",
            action="append",
            dest="upstreams",
            type=_upstream,
            metavar="HOST:PORT",
            help="an inference server's gRPC address, repeatable: requests are balanced "
            "across them (default: 127.0.0.1:8001)",
        )
        cmd.add_argument(
            "--health-check-interval-s",
            type=float,
            default=DEFAULT_HEALTH_CHECK_INTERVAL_S,
            help="seconds between health checks of each upstream; keep the servers' "
            "--shutdown-delay-s above it plus 1 s",
        )
        cmd.add_argument("--admin-host", default="127.0.0.1")
        cmd.add_argument("--admin-port", type=int, default=9901, help="0: any free port")
        cmd.add_argument(
            "--cors-origin",
            action="append",
            dest="cors_origins",
            metavar="ORIGIN",
            help="allowed browser origin, repeatable; `*` is a wildcard "
            f"(default: {' '.join(DEFAULT_CORS_ORIGINS)})",
        )
        cmd.add_argument(
            "--static",
            action="append",
            type=_static_file,
            default=[],
            metavar="/URL/PATH=FILE",
            help="serve FILE at exactly /URL/PATH, repeatable",
        )
        cmd.add_argument("--build-dir", type=Path, default=BUILD_DIR)
        cmd.add_argument(
            "--access-log",
            default="-",
            metavar="PATH",
            help="JSON access log: - for standard output (default), a file, or '' for none",
        )
        _tls_options(cmd)
    commands.choices["run"].add_argument("--log-level", default="warn")
    commands.choices["render"].add_argument(
        "--secrets-dir",
        type=Path,
        default=BUILD_DIR / "secrets",
        help="where to write the TLS secrets (SDS files) the configuration names",
    )
    return parser


def _tls_options(cmd: argparse.ArgumentParser) -> None:
    tls = cmd.add_argument_group("TLS (certificates are reloaded when renamed into place)")
    tls.add_argument("--tls-cert-file", type=Path, help="the listener's PEM chain: HTTPS")
    tls.add_argument("--tls-key-file", type=Path, help="its unencrypted PEM key")
    tls.add_argument(
        "--upstream-tls-ca-file", type=Path, help="connect to the server over TLS, trusting this CA"
    )
    tls.add_argument(
        "--upstream-tls-cert-file", type=Path, help="client certificate for a mutual-TLS server"
    )
    tls.add_argument("--upstream-tls-key-file", type=Path, help="its unencrypted PEM key")
    tls.add_argument(
        "--upstream-tls-server-name",
        help="the name the server's certificate must carry (default: the upstream host)",
    )


def _tls(args: argparse.Namespace) -> tuple[ListenerTls | None, UpstreamTls | None]:
    if (args.tls_cert_file is None) != (args.tls_key_file is None):
        raise ValueError("--tls-cert-file and --tls-key-file go together")
    listener = None
    if args.tls_cert_file is not None:
        listener = ListenerTls(args.tls_cert_file, args.tls_key_file)
    upstream_options = (
        args.upstream_tls_cert_file,
        args.upstream_tls_key_file,
        args.upstream_tls_server_name,
    )
    if args.upstream_tls_ca_file is None:
        if any(option is not None for option in upstream_options):
            raise ValueError("the --upstream-tls-* options need --upstream-tls-ca-file")
        return listener, None
    return listener, UpstreamTls(args.upstream_tls_ca_file, *upstream_options)


def _settings(args: argparse.Namespace) -> GatewaySettings:
    tls, upstream_tls = _tls(args)
    return GatewaySettings(
        listen_host=args.listen_host,
        listen_port=args.listen_port,
        upstreams=tuple(args.upstreams or DEFAULT_UPSTREAMS),
        health_check_interval_s=args.health_check_interval_s,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        cors_origins=tuple(args.cors_origins or DEFAULT_CORS_ORIGINS),
        build_dir=args.build_dir,
        static_files=tuple(args.static),
        access_log=args.access_log,
        tls=tls,
        upstream_tls=upstream_tls,
    )


def _listening_event(running: RunningGateway) -> dict[str, object]:
    return {
        "event": "gateway_listening",
        "http_address": running.address,
        "http_port": running.http_port,
        "admin_port": running.admin_port,
        "upstream": running.upstream,
        "tls": running.tls,
    }


def _run(settings: GatewaySettings, log_level: str) -> int:
    with tempfile.TemporaryDirectory(prefix="gateway-") as workdir:
        gateway = Gateway(settings, Path(workdir), log_level)
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True
            if gateway.process is not None:
                gateway.process.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            try:
                running = gateway.start()
            except GatewayError:
                if stopping:  # interrupted while starting
                    return 0
                raise
            print(json.dumps(_listening_event(running)), flush=True)
            status = gateway.wait()
        finally:
            gateway.stop()
    return 0 if stopping else status


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "build":
        # Only building needs protoc (grpcio-tools): `run` works without it.
        from gateway.build import build

        outputs = build(args.out)
        print(f"wrote {outputs.descriptor_path} and {outputs.openapi_path}")
        return 0
    try:
        settings = _settings(args)
    except ValueError as exc:
        _parser().error(str(exc))
    if args.command == "render":
        write_secrets(settings, args.secrets_dir)
        sys.stdout.write(render(settings, args.secrets_dir))
        return 0
    try:
        return _run(settings, args.log_level)
    except GatewayError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
