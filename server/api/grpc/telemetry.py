"""The gRPC face's telemetry: RPC durations by method and status code, and the access log.

One interceptor, installed only when there is something to do (metrics on, or an access
log). It wraps each method's handler once and caches the wrapper, so an RPC costs a
cache lookup, a clock read on each side and one dict update in `RpcStats`; no lock, no
allocation beyond the wrapper's frame. The status is what the RPC ended with: OK, the
code it was aborted with, CANCELLED, or UNKNOWN for an exception grpc reports as such.

Streams are timed from open to close, with the status of the stream itself; the access
log writes one record per stream, with its message count.

When tracing is on, `tracing_interceptor` (opentelemetry-instrumentation-grpc) goes
first, so that this interceptor runs inside the RPC's span and the access log carries
its trace id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from server.api.grpc.status import CODES
from server.api.grpc.streams import replies
from server.telemetry.access import AccessLog
from server.telemetry.rpc import RpcStats
from server.telemetry.traces import Tracing

_clock = time.perf_counter_ns
TRACEPARENT = "traceparent"


def status_name(error: type[BaseException]) -> str:
    """The status code a request that failed with `error` gets, for the model metrics:
    the status table along the MRO; a cancelled request is CANCELLED; anything else
    INTERNAL, as `status.status_for` answers it."""
    if issubclass(error, asyncio.CancelledError):
        return "CANCELLED"
    for cls in error.__mro__:
        code = CODES.get(cls)
        if code is not None:
            return str(code.name)
    return "INTERNAL"


def tracing_interceptor(tracing: Tracing) -> grpc.aio.ServerInterceptor:
    """A SERVER span per RPC, parented on the incoming W3C traceparent."""
    return aio_server_interceptor(tracer_provider=tracing.provider)  # type: ignore[no-any-return]


def _code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    return "OK" if code is None else str(code.name)


def _failed(context: grpc.aio.ServicerContext) -> str:
    """An RPC that raised: aborted with a code, or failed in a way grpc calls UNKNOWN."""
    code = context.code()
    return "UNKNOWN" if code is None else str(code.name)


def _traceparent(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT:
            return str(value)
    return ""


class TelemetryInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, rpc: RpcStats | None, access: AccessLog | None) -> None:
        self._rpc = rpc
        self._access = access
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method[1:], handler))
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._stream(method, handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler  # this service has no other kinds of methods

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        rpc, access = self._rpc, self._access
        ok = rpc.buckets(method, "OK") if rpc is not None else None  # the common case

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = _clock()
            code = "UNKNOWN"
            response = None
            try:
                response = await behavior(request, context)
                code = _code(context)
                return response
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _failed(context)
                raise
            finally:
                ns = _clock() - start
                if ok is not None and code == "OK":
                    ok.add(ns)
                elif rpc is not None:
                    rpc.record(method, code, ns)
                if access is not None and access.sampled():
                    access.write(
                        method,
                        code,
                        ns,
                        request_id=getattr(request, "id", ""),
                        model=getattr(request, "model_name", ""),
                        version=getattr(response, "model_version", "")
                        or getattr(request, "model_version", ""),
                        traceparent=_traceparent(context),
                    )

        return unary

    def _stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        rpc, access = self._rpc, self._access

        async def stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            start = _clock()
            code = "UNKNOWN"
            messages = 0
            try:
                async for reply in replies(behavior(requests, context)):
                    messages += 1
                    yield reply
                code = _code(context)
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except BaseException:
                code = _failed(context)
                raise
            finally:
                ns = _clock() - start
                if rpc is not None:
                    rpc.record(method, code, ns)
                if access is not None and access.sampled():
                    access.write(
                        method, code, ns, traceparent=_traceparent(context), messages=messages
                    )

        return stream
