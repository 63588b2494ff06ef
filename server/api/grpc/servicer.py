"""The `inference.GRPCInferenceService` servicer: decode, call the data plane, encode."""

from __future__ import annotations

import asyncio
import email.utils
import functools
from collections.abc import AsyncIterator

import grpc
import numpy as np

from inference import grpc_service_pb2 as pb
from server.api.grpc import messages, registration
from server.api.grpc.codec import decode_request, encode_response
from server.api.grpc.registration import Malformed
from server.api.grpc.status import grpc_errors, status_for
from server.core.dataplane import DataPlane, Running
from server.core.errors import InvalidRequest
from server.core.limits import MAX_BATCH_ROWS, MAX_ELEMENT_BYTES
from server.core.model_config import Deprecation

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
# A failed request on a stream carries its status code here, next to error_message.
STREAM_ERROR_CODE = "error_code"


def deprecation_metadata(deprecation: Deprecation) -> tuple[tuple[str, str], ...]:
    """Initial metadata, which the gateway turns into HTTP headers (the draft-standard
    Deprecation header, RFC 8594 Sunset, and a successor-version Link)."""
    return (
        ("deprecation", "true"),
        ("sunset", email.utils.format_datetime(deprecation.sunset, usegmt=True)),
        ("link", f'<{deprecation.link}>; rel="successor-version"'),
    )


class InferenceServicer:
    def __init__(
        self,
        dataplane: DataPlane,
        max_elements: int,
        max_stream_requests: int = 1024,
        max_rows: int = MAX_BATCH_ROWS,
        max_element_bytes: int = MAX_ELEMENT_BYTES,
    ) -> None:
        self._dataplane = dataplane
        self._max_elements = max_elements
        self._max_stream_requests = max_stream_requests
        self._limits = (max_elements, max_rows, max_element_bytes)

    def register(self, server: grpc.aio.Server) -> None:
        registration.register(server, SERVICE, self)

    @grpc_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: object) -> object:
        return pb.ServerLiveResponse(live=self._dataplane.live)

    @grpc_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: object) -> object:
        return pb.ServerReadyResponse(ready=self._dataplane.ready())

    @grpc_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: object) -> object:
        return pb.ModelReadyResponse(
            ready=self._dataplane.model_ready(request.name, request.version)
        )

    @grpc_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: object) -> object:
        return messages.server_metadata(self._dataplane.info)

    @grpc_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: object) -> object:
        return messages.model_metadata(self._dataplane.metadata(request.name, request.version))

    @grpc_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: object) -> object:
        return messages.model_config(self._dataplane.model(request.name, request.version))

    @grpc_errors
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: object) -> object:
        return messages.model_statistics(self._dataplane.statistics(request.name, request.version))

    @grpc_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: object) -> object:
        _check_repository(request.repository_name)
        return messages.repository_index(self._dataplane.index(request.ready))

    @grpc_errors
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: object
    ) -> object:
        _check_repository(request.repository_name)
        await self._dataplane.load(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @grpc_errors
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: object
    ) -> object:
        _check_repository(request.repository_name)
        await self._dataplane.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> object:
        decoded = decode_request(request, *self._limits)
        response = await self._dataplane.infer(decoded, context.time_remaining())
        if response.deprecation is not None:
            await context.send_initial_metadata(deprecation_metadata(response.deprecation))
        return encode_response(response, bool(request.raw_input_contents))

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest | Malformed],
        context: grpc.aio.ServicerContext,
    ) -> None:
        """Requests run concurrently, so one stream fills batches; replies come in
        completion order, correlated by `id`. A failed request gets `error_message` and its
        status code in `infer_response.parameters["error_code"]`, and the stream stays open.

        Backpressure: at most `max_stream_requests` requests are unanswered or unsent at
        once; beyond that the server stops reading the stream until the client reads
        replies, so a client that never reads cannot grow the server's memory."""
        replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self._max_stream_requests)
        pending: set[asyncio.Future[list[np.ndarray]]] = set()
        done_reading = False

        def failed(request: pb.ModelInferRequest | Malformed, exc: BaseException) -> None:
            code, message = status_for(exc)
            reply = pb.ModelStreamInferResponse(
                error_message=message,
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name,
                    model_version=request.model_version,
                    id=request.id,
                ),
            )
            reply.infer_response.parameters[STREAM_ERROR_CODE].string_param = code.name
            replies.put_nowait(reply)

        def finished(request: pb.ModelInferRequest, running: Running, _: object) -> None:
            pending.discard(running.future)
            if running.future.cancelled():  # the stream is closing
                running.abandon()
                return
            try:
                response = encode_response(running.response(), bool(request.raw_input_contents))
            except Exception as exc:
                failed(request, exc)
            else:
                replies.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            if done_reading and not pending:
                replies.put_nowait(None)

        def submit(request: pb.ModelInferRequest | Malformed) -> None:
            if type(request) is Malformed:
                raise InvalidRequest(request.error(), reason="malformed")
            assert isinstance(request, pb.ModelInferRequest)  # noqa: S101 (narrows; Malformed is above)
            running = self._dataplane.begin(decode_request(request, *self._limits))
            pending.add(running.future)
            running.future.add_done_callback(functools.partial(finished, request, running))

        async def read() -> None:
            # No task per request: each queued request answers from its future's callback.
            nonlocal done_reading
            try:
                iterator = aiter(request_iterator)
                while True:
                    await slots.acquire()  # released once its reply is sent
                    try:
                        request = await anext(iterator)
                    except StopAsyncIteration:
                        slots.release()
                        break
                    try:
                        submit(request)
                    except Exception as exc:
                        failed(request, exc)
            finally:
                done_reading = True
                if not pending:
                    replies.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (reply := await replies.get()) is not None:
                try:
                    await context.write(reply)
                except Exception:
                    await _client_gone()
                    raise
                slots.release()
            await reader
        finally:
            reader.cancel()
            for future in pending:
                future.cancel()


async def _client_gone(bound_s: float = 1.0) -> None:
    """A reply could not be written, because the client cancelled or went away (often
    while the server waited for it to read). grpc cancels the handler once it has seen the
    client close; until then it would log the failed write as an error with a traceback
    (a race in grpc.aio: the failed write can arrive before the close). So wait for that
    cancellation, for at most `bound_s`."""
    await asyncio.sleep(bound_s)


def _check_repository(name: str) -> None:
    """One repository per server; Triton's clients send an empty name."""
    if name:
        raise InvalidRequest(f"repository_name '{name}' is unknown; leave it empty")
