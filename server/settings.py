"""Server settings: built once at start-up from flags and environment, then passed down.

A frozen dataclass; each field's `help` is what `--help` shows. Flags win over
`INFERENCE_<FIELD>` environment variables, which win over defaults. Values are parsed by
the field's type, so "false" is false and a bad environment value is an error that
names the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

ENV_PREFIX = "INFERENCE_"


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True, slots=True)
class Settings:
    model_repository: Path = field(
        default=Path("models"),
        metadata=_help("directory holding <model>/config.yaml and <model>/<version>/model.onnx"),
    )
    host: str = field(
        default="0.0.0.0",  # noqa: S104 (a container's port must answer on every interface)
        metadata=_help(
            "address the gRPC port binds; 0.0.0.0 serves every interface, as in a container"
        ),
    )
    grpc_port: int = field(
        default=8001,
        metadata=_help("gRPC port (Triton's default); 0 picks a free port and logs it"),
    )
    workers: int = field(
        default=1,
        metadata=_help(
            "processes sharing the gRPC port through SO_REUSEPORT, each with its own batchers"
        ),
    )
    max_message_bytes: int = field(
        default=64 * 1024 * 1024, metadata=_help("largest gRPC message accepted or sent")
    )
    max_input_elements: int = field(
        default=16 * 1024 * 1024,
        metadata=_help("largest element count of one input tensor; more is INVALID_ARGUMENT"),
    )
    shutdown_grace_s: float = field(
        default=10.0,
        metadata=_help(
            "on SIGTERM, how long admitted requests may take to finish before they are "
            "cancelled; the process exits within this (after --shutdown-delay-s)"
        ),
    )
    shutdown_delay_s: float = field(
        default=0.0,
        metadata=_help(
            "on SIGTERM, keep serving this long while health reports NOT_SERVING, so that "
            "load balancers (Kubernetes endpoints) stop sending traffic first"
        ),
    )
    model_control_mode: str = field(
        default="explicit",
        metadata={
            "help": "explicit: load at start (every model, or --load-model) and through the "
            "repository RPCs; poll: follow the repository directory, RPCs refused; none: "
            "load every model at start, RPCs refused",
            "choices": ("explicit", "poll", "none"),
        },
    )
    repository_poll_secs: float = field(
        default=15.0, metadata=_help("with --model-control-mode poll: seconds between scans")
    )
    load_model: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "with --model-control-mode explicit: load only these models at start (repeat the "
            "flag; '*' for all; the environment variable takes a comma-separated list); "
            "default: all"
        ),
    )
    max_stream_requests: int = field(
        default=1024,
        metadata=_help(
            "requests one ModelStreamInfer stream may have unanswered; beyond it the server "
            "stops reading the stream until the client reads replies (backpressure)"
        ),
    )
    log_level: str = field(
        default="INFO", metadata=_help("level of the JSON log lines on standard output")
    )
    server_name: str = field(
        default="v2-inference-server", metadata=_help("name reported by ServerMetadata")
    )

    # --- Security (docs/security.md): authentication, TLS, rate limits, hard limits. ---
    api_keys_file: Path | None = field(
        default=None,
        metadata=_help(
            "YAML file of API keys, stored as SHA-256 digests (make entries with `python -m "
            "server.security new-key`); turns authentication on"
        ),
    )
    jwt_secret_file: Path | None = field(
        default=None,
        metadata=_help(
            "file holding the HS256 secret (32 bytes or more) that JWT bearer tokens are "
            "signed with; turns authentication on"
        ),
    )
    jwt_jwks_file: Path | None = field(
        default=None,
        metadata=_help(
            "JWKS file of the RS256 and ES256 public keys JWT bearer tokens are signed "
            "with; turns authentication on"
        ),
    )
    jwt_issuer: str = field(
        default="", metadata=_help("the `iss` every token must carry (required with JWT)")
    )
    jwt_audience: str = field(
        default="", metadata=_help("the `aud` every token must include (required with JWT)")
    )
    jwt_leeway_s: float = field(
        default=30.0, metadata=_help("clock skew allowed when checking `exp` and `nbf`")
    )
    jwt_scope_claim: str = field(
        default="scope",
        metadata=_help(
            "token claim (space-separated string or list) granting 'model:<name or "
            "wildcard>' and 'admin' (the repository RPCs)"
        ),
    )
    auth_exempt: tuple[str, ...] = field(
        default=("grpc.health.v1.Health",),
        metadata=_help(
            "services (or /service/Method paths, or prefixes ending in *) served without "
            "credentials (repeat the flag; '' for none)"
        ),
    )
    rate_limit: float = field(
        default=0.0,
        metadata=_help(
            "requests per second for each API key or token subject (each client address "
            "with authentication off), per worker; a key's own `rate` wins; 0: no limit"
        ),
    )
    rate_burst: int = field(
        default=0,
        metadata=_help("requests a full bucket lets through at once; 0: the rate, rounded up"),
    )
    security_reload_s: float = field(
        default=10.0,
        metadata=_help(
            "seconds between checks of the keys, secret and JWKS files for changes "
            "(SIGHUP re-reads them at once); 0: only on SIGHUP"
        ),
    )
    tls_cert_file: Path | None = field(
        default=None,
        metadata=_help("PEM certificate chain of the gRPC port; with --tls-key-file turns TLS on"),
    )
    tls_key_file: Path | None = field(
        default=None, metadata=_help("PEM private key (unencrypted) of --tls-cert-file")
    )
    tls_client_ca_file: Path | None = field(
        default=None,
        metadata=_help("PEM bundle of CAs whose client certificates are required (mutual TLS)"),
    )
    max_batch_rows: int = field(
        default=1024,
        metadata=_help(
            "largest first (batch) dimension of any input; more is INVALID_ARGUMENT before decoding"
        ),
    )
    max_element_bytes: int = field(
        default=8 * 1024 * 1024,
        metadata=_help("largest BYTES element; more is INVALID_ARGUMENT before decoding"),
    )
    max_metadata_bytes: int = field(
        default=16 * 1024,
        metadata=_help("largest request metadata (headers) a call may carry"),
    )
    max_concurrent_streams: int = field(
        default=2048,
        metadata=_help(
            "concurrent RPCs on one HTTP/2 connection; more wait (a burst on a new "
            "connection, before the client learns the limit, is refused: UNAVAILABLE)"
        ),
    )
    max_concurrent_rpcs: int = field(
        default=2048,
        metadata=_help("concurrent RPCs per worker; more get RESOURCE_EXHAUSTED at once"),
    )
    keepalive_min_ping_interval_s: float = field(
        default=300.0,
        metadata=_help(
            "shortest interval between a client's pings while the server sends nothing; "
            "a client that pings faster is disconnected (GOAWAY too_many_pings)"
        ),
    )
    keepalive_permit_without_calls: bool = field(
        default=False, metadata=_help("allow client pings on connections with no active call")
    )
    keepalive_max_ping_strikes: int = field(
        default=2, metadata=_help("pings too early before the connection is closed; 0: any number")
    )
    max_connection_age_s: float = field(
        default=0.0,
        metadata=_help(
            "close connections older than this (clients reconnect, to any --workers "
            "process, and pick up new certificates); 0: never"
        ),
    )
    max_connection_age_grace_s: float = field(
        default=30.0,
        metadata=_help("time calls on a connection past its age get to finish"),
    )

    @property
    def authentication(self) -> bool:
        return bool(self.api_keys_file or self.jwt_secret_file or self.jwt_jwks_file)


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _number(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def convert(text: str) -> int | float:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {convert.__name__}, got {text!r}") from None

    convert.__name__ = "an integer" if kind is int else "a number"
    return convert


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


PARSERS: dict[Any, Callable[[str], Any]] = {
    bool: boolean,
    int: _number(int),
    float: _number(float),
    str: str,
    Path: Path,
    Path | None: Path,
    tuple[str, ...]: _names,
}


def _shown(default: Any) -> str:
    if default is None:
        return "-"
    return ",".join(default) or "-" if isinstance(default, tuple) else str(default)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Open Inference Protocol (KServe V2) gRPC server for ONNX models",
    )
    types = get_type_hints(Settings)
    for setting in dataclasses.fields(Settings):
        convert = PARSERS[types[setting.name]]
        variable = ENV_PREFIX + setting.name.upper()
        default = setting.default
        if variable in environ:
            try:
                default = convert(environ[variable])
            except ValueError as exc:
                parser.error(f"environment variable {variable}: {exc}")
        choices = setting.metadata.get("choices")
        if choices and default not in choices:
            parser.error(f"environment variable {variable}: expected one of {list(choices)}")
        repeated = types[setting.name] == tuple[str, ...]
        parser.add_argument(
            _flag(setting.name),
            type=str if repeated else convert,
            action="append" if repeated else "store",
            choices=choices,
            default=None if repeated else default,
            metavar="NAME" if repeated else setting.name.split("_")[-1].upper(),
            help=f"{setting.metadata['help']} (env {variable}; default: {_shown(default)})",
        )
    values = vars(parser.parse_args(argv))
    for setting in dataclasses.fields(Settings):
        if values[setting.name] is None:  # a repeatable flag that was not given
            values[setting.name] = setting.default
            variable = ENV_PREFIX + setting.name.upper()
            if variable in environ:
                values[setting.name] = _names(environ[variable])
        elif isinstance(values[setting.name], list):
            values[setting.name] = tuple(values[setting.name])
    settings = Settings(**values)
    if settings.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= settings.grpc_port <= 65535:
        parser.error("--grpc-port must be 0..65535")
    if settings.load_model and settings.model_control_mode != "explicit":
        parser.error("--load-model needs --model-control-mode explicit")
    if settings.repository_poll_secs <= 0:
        parser.error("--repository-poll-secs must be positive")
    if settings.shutdown_grace_s < 0 or settings.shutdown_delay_s < 0:
        parser.error("--shutdown-grace-s and --shutdown-delay-s must not be negative")
    if settings.max_stream_requests < 1:
        parser.error("--max-stream-requests must be at least 1")
    _check_security(settings, parser)
    return settings


def _check_security(settings: Settings, parser: argparse.ArgumentParser) -> None:
    jwt = settings.jwt_secret_file or settings.jwt_jwks_file
    if jwt and not (settings.jwt_issuer and settings.jwt_audience):
        parser.error("JWT authentication needs --jwt-issuer and --jwt-audience")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        parser.error("--tls-cert-file and --tls-key-file go together")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        parser.error("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file")
    if settings.rate_limit < 0 or settings.rate_burst < 0:
        parser.error("--rate-limit and --rate-burst must not be negative")
    positive = (
        "max_batch_rows",
        "max_element_bytes",
        "max_metadata_bytes",
        "max_concurrent_streams",
        "max_concurrent_rpcs",
    )
    for name in positive:
        if getattr(settings, name) < 1:
            parser.error(f"{_flag(name)} must be at least 1")
    for name in (
        "jwt_leeway_s",
        "security_reload_s",
        "keepalive_min_ping_interval_s",
        "keepalive_max_ping_strikes",
        "max_connection_age_s",
        "max_connection_age_grace_s",
    ):
        if getattr(settings, name) < 0:
            parser.error(f"{_flag(name)} must not be negative")
