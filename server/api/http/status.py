"""The one place where domain errors become V2 REST statuses and `{"error": ...}` bodies.

The table is looked up along the exception's MRO, so a subclass inherits its parent's
status unless it has its own row. Anything unknown becomes 500 with a generic message,
and its traceback is logged. The statuses are the ones Envoy's transcoder gives the same
errors' gRPC codes (INVALID_ARGUMENT 400, NOT_FOUND 404, ...), so a client sees the same
status for an error whichever way it reached the server.
"""

from __future__ import annotations

import logging

import orjson

from server.core import errors

log = logging.getLogger(__name__)

STATUSES: dict[type[BaseException], int] = {
    errors.InvalidRequest: 400,
    errors.ModelNotFound: 404,
    errors.ModelUnavailable: 503,
    errors.QueueFull: 429,
    errors.RequestExpired: 504,
    errors.VersionRetired: 400,  # FAILED_PRECONDITION; the message names the successor
    errors.ControlDisabled: 503,
    errors.RepositoryError: 500,
    # 400, not 403: a 403 says the caller's credentials do not allow it.
    errors.ForbiddenPath: 400,
    errors.RuntimeFailure: 500,
    # The data plane's authorization; credentials and rate limits are refused before the
    # REST face runs (the admission interceptor), and Envoy makes those 401 and 429.
    errors.PermissionDenied: 403,
}

GENERIC_MESSAGE = "internal error; the server logged the cause"


def status_for(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message a client gets for `exc`."""
    for cls in type(exc).__mro__:
        status = STATUSES.get(cls)
        if status is not None:
            return status, str(exc)
    log.error("unexpected error", exc_info=exc)
    return 500, GENERIC_MESSAGE


def error_body(message: str) -> bytes:
    """V2 REST's error object."""
    return orjson.dumps({"error": message})
