"""Server settings: built once at start-up from flags and environment, then passed down."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "INFERENCE_"


@dataclass(frozen=True, slots=True)
class Settings:
    model_repository: Path
    """Directory holding `<model>/config.yaml` and `<model>/<version>/model.onnx`."""
    host: str = "0.0.0.0"
    """Address the gRPC port binds; 0.0.0.0 serves every interface, as in a container."""
    grpc_port: int = 8001
    """gRPC port (Triton's default); 0 picks a free port and logs it."""
    workers: int = 1
    """Processes sharing the gRPC port through SO_REUSEPORT, each with its own batchers."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent."""
    max_input_elements: int = 16 * 1024 * 1024
    """Largest element count of one input tensor; more is INVALID_ARGUMENT."""
    shutdown_grace_s: float = 10.0
    """How long in-flight requests may take to finish on SIGTERM."""
    log_level: str = "INFO"
    """Level of the JSON log lines on standard output."""
    server_name: str = "v2-inference-server"
    """Name reported by ServerMetadata."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags win over `INFERENCE_<FIELD>` environment variables, which win over defaults."""
    environ = os.environ if environ is None else environ
    defaults = Settings(model_repository=Path("models"))
    parser = argparse.ArgumentParser(
        prog="python -m server", description="Open Inference Protocol (KServe V2) gRPC server"
    )
    for field in Settings.__dataclass_fields__.values():
        default = environ.get(ENV_PREFIX + field.name.upper(), getattr(defaults, field.name))
        kind = type(getattr(defaults, field.name))
        parser.add_argument(
            _flag(field.name),
            type=kind,
            default=kind(default),
            help=f"(env {ENV_PREFIX}{field.name.upper()}; default %(default)s)",
        )
    args = parser.parse_args(argv)
    settings = Settings(**vars(args))
    if settings.workers < 1:
        parser.error("--workers must be at least 1")
    if not 0 <= settings.grpc_port <= 65535:
        parser.error("--grpc-port must be 0..65535")
    return settings
