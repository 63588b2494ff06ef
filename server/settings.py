"""Server settings: built once at start-up from flags and environment, then passed down.

A frozen dataclass; each field's `help` is what `--help` shows. Flags win over
`INFERENCE_<FIELD>` environment variables, which win over defaults. Values are parsed by
the field's type (`PARSERS`), so "false" is false and a bad environment value is an error
that names the variable; so is a value out of range, when it came from the environment.

Why not pydantic-settings: this needs three things from it, and the standard library
already has them. argparse gives `--help` with each field's description, `choices` and
error exits; the parser table turns text into each field's type (booleans included,
which `type=bool` gets wrong); a frozen, slotted dataclass keeps the settings immutable
and cheap to pass down. pydantic-settings would add pydantic and its compiled core to
every server image for that, and its command-line source is newer and less settled than
argparse. If settings ever need nested models or secrets files, that is the time to
reconsider.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, get_type_hints

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
    metrics: bool = field(
        default=True,
        metadata=_help(
            "serve Prometheus metrics at http://HOST:METRICS_PORT/metrics (false: no metrics "
            "endpoint and no RPC timing)"
        ),
    )
    metrics_port: int = field(
        default=8002,
        metadata=_help(
            "port of the metrics endpoint (Triton's default); 0 picks a free port and logs "
            "it; with --workers the parent serves every worker's metrics there"
        ),
    )
    trace_exporter: str = field(
        default="none",
        metadata={
            "help": "where spans go: none (no spans are created at all), otlp (OTLP over "
            "gRPC, see --trace-otlp-endpoint) or console (one JSON line per span on stdout)",
            "choices": ("none", "otlp", "console"),
        },
    )
    trace_otlp_endpoint: str = field(
        default="",
        metadata=_help(
            "OTLP gRPC collector for --trace-exporter otlp, e.g. http://127.0.0.1:4317; "
            "empty: OTEL_EXPORTER_OTLP_ENDPOINT, or localhost:4317"
        ),
    )
    trace_sample_ratio: float = field(
        default=1.0,
        metadata=_help(
            "fraction of traces started here that are sampled, 0..1; a request whose "
            "traceparent says sampled (or not) is followed as it says"
        ),
    )
    access_log_sample: float = field(
        default=0.0,
        metadata=_help(
            "fraction of RPCs written to the access log (logger server.access), 0..1; "
            "0: no access log"
        ),
    )
    payload_log_file: str = field(
        default="",
        metadata=_help(
            "file the payload log (models with payload_logging in config.yaml) is written "
            "to, one JSON object per line; empty: the log stream on standard output"
        ),
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
        default=0,
        metadata=_help(
            "concurrent RPCs on one HTTP/2 connection (0: gRPC's default, no limit); grpc "
            "clients beyond a limit may see UNAVAILABLE (REFUSED_STREAM), not a wait"
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


_UNSET: Any = object()  # a flag that was not given


class _Origins:
    """Where each setting's value came from, so that an error names what the user set:
    the environment variable when the value came from there, the flag otherwise."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self._parser = parser
        self.from_env: set[str] = set()

    def name(self, setting: str) -> str:
        if setting in self.from_env:
            return f"environment variable {ENV_PREFIX}{setting.upper()}"
        return _flag(setting)

    def error(self, text: str, *settings: str) -> NoReturn:
        """Exit with `text`, its `{}` filled with the names of `settings`."""
        self._parser.error(text.format(*(self.name(setting) for setting in settings)))


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Open Inference Protocol (KServe V2) gRPC server for ONNX models",
    )
    types = get_type_hints(Settings)
    from_env: dict[str, Any] = {}
    for setting in dataclasses.fields(Settings):
        convert = PARSERS[types[setting.name]]
        variable = ENV_PREFIX + setting.name.upper()
        default = setting.default
        if variable in environ:
            try:
                default = from_env[setting.name] = convert(environ[variable])
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
            default=None if repeated else _UNSET,  # append needs None
            metavar="NAME" if repeated else setting.name.split("_")[-1].upper(),
            help=f"{setting.metadata['help']} (env {variable}; default: {_shown(default)})",
        )
    values = vars(parser.parse_args(argv))
    origins = _Origins(parser)
    for setting in dataclasses.fields(Settings):
        value = values[setting.name]
        if value is _UNSET or value is None:  # not given on the command line
            if setting.name in from_env:
                value = from_env[setting.name]
                origins.from_env.add(setting.name)
            else:
                value = setting.default
        elif isinstance(value, list):  # a repeatable flag, given at least once
            value = tuple(value)
        values[setting.name] = value
    settings = Settings(**values)
    _check(settings, origins)
    _check_security(settings, origins)
    return settings


def _check(settings: Settings, origins: _Origins) -> None:
    if settings.workers < 1:
        origins.error("{} must be at least 1", "workers")
    for port in ("grpc_port", "metrics_port"):
        if not 0 <= getattr(settings, port) <= 65535:
            origins.error("{} must be 0..65535", port)
    if settings.load_model and settings.model_control_mode != "explicit":
        origins.error("{} needs {} explicit", "load_model", "model_control_mode")
    if settings.repository_poll_secs <= 0:
        origins.error("{} must be positive", "repository_poll_secs")
    if settings.max_stream_requests < 1:
        origins.error("{} must be at least 1", "max_stream_requests")
    for name in ("shutdown_grace_s", "shutdown_delay_s"):
        if getattr(settings, name) < 0:
            origins.error("{} must not be negative", name)
    for ratio in ("trace_sample_ratio", "access_log_sample"):
        if not 0.0 <= getattr(settings, ratio) <= 1.0:
            origins.error("{} must be between 0 and 1", ratio)


def _check_security(settings: Settings, origins: _Origins) -> None:
    jwt = settings.jwt_secret_file or settings.jwt_jwks_file
    if jwt and not (settings.jwt_issuer and settings.jwt_audience):
        origins.error("JWT authentication needs {} and {}", "jwt_issuer", "jwt_audience")
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        origins.error("{} and {} go together", "tls_cert_file", "tls_key_file")
    if settings.tls_client_ca_file and not settings.tls_cert_file:
        origins.error(
            "{} (mutual TLS) needs {} and {}", "tls_client_ca_file", "tls_cert_file", "tls_key_file"
        )
    for name in (
        "max_batch_rows",
        "max_element_bytes",
        "max_metadata_bytes",
        "max_concurrent_rpcs",
    ):
        if getattr(settings, name) < 1:
            origins.error("{} must be at least 1", name)
    for name in (
        "rate_limit",
        "rate_burst",
        "max_concurrent_streams",
        "jwt_leeway_s",
        "security_reload_s",
        "keepalive_min_ping_interval_s",
        "keepalive_max_ping_strikes",
        "max_connection_age_s",
        "max_connection_age_grace_s",
    ):
        if getattr(settings, name) < 0:
            origins.error("{} must not be negative", name)
