"""What a V2 REST handler answers, and how it travels back through the gateway.

A handler returns a `Reply` or raises a domain error; `rest_call` turns either into the
RPC's answer, a `google.api.HttpBody`, whose content type the transcoder makes the HTTP
one. Errors are answered as replies, so the body is V2's `{"error": ...}` and not the
transcoder's `{"code", "message"}`, and every status comes from one table (`status.py`).

What the HTTP reply needs besides the body travels as parameters of that content type,
which the gateway's Lua filter removes (docs/gateway.md): `x-v2-status=404`, the status,
and `x-v2-header-length=N`, the JSON header's length before binary data, which becomes
`Inference-Header-Content-Length`. Not initial metadata, which the transcoder would also
turn into headers: sending it is a gRPC operation of its own, measured at about 100 us of
server CPU a reply. Only a deprecated version's notice goes as initial metadata.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api import httpbody_pb2

from server.api.http.status import error_body, status_for

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
STATUS_PARAMETER = "x-v2-status"
HEADER_LENGTH_PARAMETER = "x-v2-header-length"


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    status: int = 200
    header_length: int | None = None  # the JSON header's length when binary data follows
    headers: Headers = ()  # more response headers (a deprecated version's notice)

    def content_type(self) -> str:
        if self.header_length is None:
            content_type = JSON
        else:
            content_type = f"{OCTET_STREAM}; {HEADER_LENGTH_PARAMETER}={self.header_length}"
        if self.status != 200:
            content_type += f"; {STATUS_PARAMETER}={self.status}"
        return content_type

    def http_body(self) -> httpbody_pb2.HttpBody:
        return httpbody_pb2.HttpBody(content_type=self.content_type(), data=self.body)


def error_reply(exc: BaseException) -> Reply:
    status, message = status_for(exc)
    return Reply(error_body(message), status)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Reply]])


def rest_call(method: Handler) -> Handler:
    """Answer a handler's Reply, or its error as a Reply, as an HttpBody RPC reply."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: Any) -> httpbody_pb2.HttpBody:
        try:
            reply = await method(self, request, context)
        except Exception as exc:
            reply = error_reply(exc)
        if reply.headers:
            await context.send_initial_metadata(reply.headers)
        return reply.http_body()

    return wrapper  # type: ignore[return-value]
