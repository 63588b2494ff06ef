"""What a V2 REST handler answers, and how it travels back through the gateway.

A handler returns a `Reply` or raises a domain error; `rest_call` turns either into the
RPC's answer: a `google.api.HttpBody` (its content type becomes the HTTP one) and initial
metadata, which Envoy's transcoder turns into response headers. The HTTP status travels
as `x-v2-status`, which the gateway's Lua filter moves into `:status` (docs/gateway.md):
errors are answered as replies, so the body is V2's `{"error": ...}` and not the
transcoder's `{"code", "message"}`, and every status comes from one table (`status.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.api import httpbody_pb2

from server.api.http.binary import HEADER_LENGTH
from server.api.http.status import error_body, status_for

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
STATUS_HEADER = "x-v2-status"


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Reply:
    body: bytes
    status: int = 200
    header_length: int | None = None  # the JSON header's length when binary data follows
    headers: Headers = ()  # more response headers (a deprecated version's notice)

    def metadata(self) -> Headers:
        metadata = self.headers
        if self.status != 200:
            metadata += ((STATUS_HEADER, str(self.status)),)
        if self.header_length is not None:
            metadata += ((HEADER_LENGTH, str(self.header_length)),)
        return metadata

    def http_body(self) -> httpbody_pb2.HttpBody:
        content_type = JSON if self.header_length is None else OCTET_STREAM
        return httpbody_pb2.HttpBody(content_type=content_type, data=self.body)


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
        metadata = reply.metadata()
        if metadata:
            await context.send_initial_metadata(metadata)
        return reply.http_body()

    return wrapper  # type: ignore[return-value]
