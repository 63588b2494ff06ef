"""The server interceptor that admits calls: authenticates them, charges their rate limit,
and records their caller for the data plane's authorizer.

Every face reaches the server as gRPC (native clients, and REST and gRPC-web through
Envoy, which forwards `authorization` and `x-api-key` as metadata), so this is the one
place that checks credentials: each call once, before its request is read. It is installed
only when authentication or rate limits are on.

- Exempt methods (`--auth-exempt`: service names, `/service/Method` paths, or a prefix
  ending in `*`) pass untouched, with a caller that may use every model but is no admin.
- A missing or bad credential: UNAUTHENTICATED, for the whole call (a stream included).
- Rate limits: a unary call takes one token from its principal's bucket; a stream takes
  one per request message, charged by the data plane (`Caller.per_request`), so that a
  refused message gets an error reply and the stream goes on. An empty bucket is
  RESOURCE_EXHAUSTED with a RetryInfo detail and `retry-after` (`status.retry_trailers`).
- With authentication off, the buckets are per client address (the peer's IP, without
  its port). Only then are handlers wrapped: the peer is known only inside the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

from server.api.grpc.status import status_for, trailers_for
from server.api.grpc.streams import replies
from server.core.errors import InferenceError, Unauthenticated
from server.security.bucket import Buckets, TokenBucket, refusal
from server.security.caller import CALLER, Caller
from server.security.credentials import Authenticator
from server.security.principal import EVERY_MODEL, EXEMPT, PEER, Principal

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

MAX_WRAPPED = 1024  # handlers remembered by PerPeer
EXEMPT_CALLER = Caller(Principal(EXEMPT, "exempt", EVERY_MODEL))
# With authentication off, everyone may do everything; only the rate is per address.
ANYONE_CALLER = Caller(Principal(PEER, "any client", EVERY_MODEL, admin=True))


def peer_address(peer: str) -> str:
    """`ipv4:10.0.0.1:5000` -> `ipv4:10.0.0.1`; `ipv6:[::1]:5000` -> `ipv6:[::1]`: a client
    that opens new connections keeps its bucket."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return kind + ":" + rest.rpartition(":")[0]
    return peer


class Exemptions:
    """Methods served without credentials."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = [entry.strip() for entry in entries if entry.strip()]
        self._methods = frozenset(e for e in entries if e.startswith("/"))
        self._prefixes = tuple(
            "/" + e[:-1] if e.endswith("*") else "/" + e + "/"
            for e in entries
            if not e.startswith("/")
        )

    def __contains__(self, method: str) -> bool:
        return method in self._methods or method.startswith(self._prefixes)


def _refusing(handler: grpc.RpcMethodHandler, exc: InferenceError) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that fails the call with `exc`'s status,
    without decoding its request."""
    code, message = status_for(exc)
    trailers = trailers_for(exc)

    async def refuse(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message, trailers)

    async def refuse_stream(
        request: object, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[object]:
        """Response-streaming kinds get a generator, as interceptors around them expect."""
        await context.abort(code, message, trailers)
        yield None  # never reached: abort raises

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.unary_unary_rpc_method_handler(refuse)


class Admission(grpc.aio.ServerInterceptor):
    def __init__(
        self,
        authenticator: Authenticator | None,
        buckets: Buckets | None,
        exempt: Iterable[str] = (),
    ) -> None:
        if authenticator is None and buckets is None:
            raise ValueError("nothing to admit: no authentication and no rate limits")
        self._authenticator = authenticator
        self._buckets = buckets
        self._exempt = Exemptions(exempt)
        self._per_peer = PerPeer(buckets) if authenticator is None and buckets is not None else None

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # UNIMPLEMENTED
            return None
        if handler_call_details.method in self._exempt:
            CALLER.set(EXEMPT_CALLER)
            return handler
        if self._authenticator is None:
            CALLER.set(ANYONE_CALLER)
            return handler if self._per_peer is None else self._per_peer.limited(handler)
        try:
            principal = self._authenticator.authenticate(
                handler_call_details.invocation_metadata  # type: ignore[arg-type]
            )
        except Unauthenticated as exc:
            return _refusing(handler, exc)
        bucket = None if self._buckets is None else self._buckets.for_principal(principal)
        if bucket is not None and not handler.request_streaming:
            wait = bucket.take()
            if wait:
                return _refusing(handler, refusal(principal, bucket, wait))
            bucket = None  # charged: the call's requests are not charged again
        CALLER.set(Caller(principal, bucket))
        return handler


class PerPeer:
    """Rate limits by client address, with authentication off. The peer is known only
    inside the call, so handlers are wrapped (once each) to look it up."""

    def __init__(self, buckets: Buckets) -> None:
        self._buckets = buckets
        self._wrapped: dict[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = {}

    def limited(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """gRPC hands out the same handler object for a method every time, so each is
        wrapped once; the bound only guards against a server that did not."""
        wrapped = self._wrapped.get(handler)
        if wrapped is None:
            wrapped = self._wrap(handler)
            if len(self._wrapped) < MAX_WRAPPED:
                self._wrapped[handler] = wrapped
        return wrapped

    def _peer(self, context: grpc.aio.ServicerContext) -> tuple[Principal, TokenBucket | None]:
        address = peer_address(context.peer())
        bucket = self._buckets.for_address(PEER, address)
        return Principal(PEER, address, EVERY_MODEL, admin=True), bucket

    async def _charge_call(self, context: grpc.aio.ServicerContext) -> None:
        """Take the call's token from its client address's bucket, or abort the call."""
        principal, bucket = self._peer(context)
        if bucket is not None:
            wait = bucket.take()
            if wait:
                exc = refusal(principal, bucket, wait)
                code, message = status_for(exc)
                await context.abort(code, message, trailers_for(exc))

    def _charge_requests(self, context: grpc.aio.ServicerContext) -> None:
        """Let the data plane take a token per request of this stream."""
        CALLER.set(Caller(*self._peer(context)))

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        codecs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._charge_call(context)
                return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **codecs)
        if handler.stream_unary is not None:
            inner = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                self._charge_requests(context)
                return await inner(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **codecs)
        if handler.unary_stream is not None:
            inner = handler.unary_stream

            async def unary_stream(
                request: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                await self._charge_call(context)
                async for reply in replies(inner(request, context)):
                    yield reply

            return grpc.unary_stream_rpc_method_handler(unary_stream, **codecs)
        inner = handler.stream_stream

        async def stream_stream(
            requests: Any, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            self._charge_requests(context)
            async for reply in replies(inner(requests, context)):
                yield reply

        return grpc.stream_stream_rpc_method_handler(stream_stream, **codecs)
