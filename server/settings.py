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
        default="0.0.0.0",
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
    tuple[str, ...]: _names,
}


def _shown(default: Any) -> str:
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
    if not 0 <= settings.metrics_port <= 65535:
        parser.error("--metrics-port must be 0..65535")
    if not 0.0 <= settings.trace_sample_ratio <= 1.0:
        parser.error("--trace-sample-ratio must be between 0 and 1")
    if not 0.0 <= settings.access_log_sample <= 1.0:
        parser.error("--access-log-sample must be between 0 and 1")
    return settings
