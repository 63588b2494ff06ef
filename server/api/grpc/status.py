"""The one place where domain errors become gRPC status codes.

The table is looked up along the exception's MRO, so a subclass inherits its parent's
code unless it has its own row. Anything unknown becomes INTERNAL with a generic message,
and its traceback is logged. A RateLimited error also carries a retry hint in its trailing
metadata (`trailers_for`): a google.rpc.RetryInfo detail and a `retry-after` entry.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.api.grpc.registration import Malformed
from server.core import errors

log = logging.getLogger(__name__)

CODES: dict[type[BaseException], grpc.StatusCode] = {
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModelUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.VersionRetired: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ControlDisabled: grpc.StatusCode.UNAVAILABLE,
    errors.QueueFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.RequestExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.RepositoryError: grpc.StatusCode.INTERNAL,
    # Not PERMISSION_DENIED: that one means the caller's credentials do not allow it.
    errors.ForbiddenPath: grpc.StatusCode.INVALID_ARGUMENT,
    errors.RuntimeFailure: grpc.StatusCode.INTERNAL,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
}

GENERIC_MESSAGE = "internal error; the server logged the cause"
# Status details travel percent-encoded in a trailer, and clients cap metadata (grpc: 8 KiB
# soft, 16 KiB hard); a message quoting a huge client-supplied name would lose the status.
MAX_MESSAGE_BYTES = 1024


def bounded(message: str) -> str:
    """`message`, with its middle elided if its UTF-8 exceeds MAX_MESSAGE_BYTES, so
    that both what it names and what it expects survive."""
    encoded = message.encode()
    if len(encoded) <= MAX_MESSAGE_BYTES:
        return message
    half = MAX_MESSAGE_BYTES // 2
    head = encoded[:half].decode(errors="ignore")
    tail = encoded[-half:].decode(errors="ignore")
    return f"{head}...({len(encoded) - 2 * half} bytes elided)...{tail}"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code, bounded(str(exc))
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, GENERIC_MESSAGE


Trailers = tuple[tuple[str, str | bytes], ...]


def retry_trailers(message: str, retry_after_s: float) -> Trailers:
    """RESOURCE_EXHAUSTED's retry hint: google.rpc.RetryInfo in `grpc-status-details-bin`
    (read it with grpcio-status `rpc_status.from_call`), and `retry-after` in whole
    seconds, rounded up, as HTTP's Retry-After header wants it."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(int(retry_after_s * 1e9), 0))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    trailers: Trailers = rpc_status.to_status(status).trailing_metadata
    return (*trailers, ("retry-after", str(max(math.ceil(retry_after_s), 1))))


def trailers_for(exc: BaseException) -> Trailers:
    """The trailing metadata that goes with an error's status: a retry hint, or nothing."""
    if isinstance(exc, errors.RateLimited):
        return retry_trailers(str(exc), exc.retry_after_s)
    return ()


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def grpc_errors(method: Handler) -> Handler:
    """Abort a unary handler's RPC with the mapped status when it raises; a request whose
    bytes did not decode is INVALID_ARGUMENT before the handler runs."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if type(request) is Malformed:
                raise errors.InvalidRequest(request.error(), reason="malformed")
            return await method(self, request, context)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            code, message = status_for(exc)
            await context.abort(code, message, trailers_for(exc))

    return wrapper  # type: ignore[return-value]
