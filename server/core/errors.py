"""Domain errors. They import no transport code; each face maps them to its status codes
(`server.api.grpc.status`).

InferenceError
├── InvalidRequest          the request is malformed or does not fit the model
├── ModelNotFound           no such model, or no such version
├── ModelUnavailable        the model exists but has no ready version, or is unloading
│   └── ShuttingDown        the shutdown grace ran out before the request finished
├── VersionRetired          the version passed its sunset date; the message names its successor
├── QueueFull               the model's queue is at max_queue_size
├── RequestExpired          the request's deadline passed while it waited
├── ControlDisabled         load and unload RPCs in the none and poll control modes
├── RepositoryError         a load or unload the repository refused
│   └── ForbiddenPath       a model name that escapes the repository root
├── RuntimeFailure          ONNX Runtime failed while executing
├── Unauthenticated         no credential, or one that does not verify (server.security)
├── PermissionDenied        the caller may not use this model, or this RPC needs admin
└── RateLimited             the caller's token bucket is empty; carries `retry_after_s`

Besides the message, an error carries structured fields (model, version, tensor and a
short `reason`), so that telemetry and logs can label it without parsing the text.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error the server reports to a client on purpose."""

    reason = "error"  # a short, stable label for metrics; subclasses override it

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        version: str = "",
        tensor: str = "",
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.version = version
        self.tensor = tensor
        if reason:
            self.reason = reason


class InvalidRequest(InferenceError):
    reason = "invalid_request"


class ModelNotFound(InferenceError):
    reason = "model_not_found"


class ModelUnavailable(InferenceError):
    reason = "model_unavailable"


class ShuttingDown(ModelUnavailable):
    """The shutdown grace ran out before the request finished."""

    reason = "shutting_down"


class VersionRetired(InferenceError):
    reason = "version_retired"


class ControlDisabled(InferenceError):
    reason = "control_disabled"


class QueueFull(InferenceError):
    reason = "queue_full"


class RequestExpired(InferenceError):
    reason = "request_expired"


class RepositoryError(InferenceError):
    reason = "repository_error"


class ForbiddenPath(RepositoryError):
    reason = "forbidden_path"


class RuntimeFailure(InferenceError):
    reason = "runtime_failure"


class Unauthenticated(InferenceError):
    reason = "unauthenticated"


class PermissionDenied(InferenceError):
    reason = "permission_denied"


class RateLimited(InferenceError):
    """`retry_after_s`: when the caller's bucket holds a token again (the retry hint)."""

    reason = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
