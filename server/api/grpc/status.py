"""The one place where domain errors become gRPC status codes.

The table is looked up along the exception's MRO, so a subclass inherits its parent's
code unless it has its own row. Anything unknown becomes INTERNAL with a generic message,
and its traceback is logged.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

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
}

GENERIC_MESSAGE = "internal error; the server logged the cause"


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code, str(exc)
    log.error("unexpected error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, GENERIC_MESSAGE


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
            await context.abort(code, message)

    return wrapper  # type: ignore[return-value]
