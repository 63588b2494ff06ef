"""Domain errors. They import no transport code; `server.status` maps them to gRPC codes.

InferenceError
├── InvalidRequest          the request is malformed or does not fit the model
├── ModelNotFound           no such model, or no such version
├── ModelUnavailable        the model exists but has no ready version
├── QueueFull               the model's queue is at max_queue_size
├── RequestExpired          the request's deadline passed while it waited
├── RepositoryError         a load or unload the repository refused
│   └── ForbiddenPath       a model name that escapes the repository root
└── RuntimeFailure          ONNX Runtime failed while executing
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base of every error the server reports to a client on purpose."""


class InvalidRequest(InferenceError):
    pass


class ModelNotFound(InferenceError):
    pass


class ModelUnavailable(InferenceError):
    pass


class QueueFull(InferenceError):
    pass


class RequestExpired(InferenceError):
    pass


class RepositoryError(InferenceError):
    pass


class ForbiddenPath(RepositoryError):
    pass


class RuntimeFailure(InferenceError):
    pass
