"""Domain errors -> gRPC status: every row of `server.api.grpc.status.CODES`, through a
real stub.

A throwaway servicer raises the error named by the request's id from a ModelInfer wrapped
in `grpc_errors`, on a real grpc.aio server on port 0, registered with tolerant decoding
as the real servicer is; the client sees the code and the message. Unknown exceptions
become INTERNAL with the generic message and a logged trace.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc
import pytest
import pytest_asyncio

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc import registration
from server.api.grpc.status import CODES, GENERIC_MESSAGE, grpc_errors, status_for
from server.core import errors

Code: TypeAlias = grpc.StatusCode

LOGGER = "server.api.grpc.status"
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]

ROWS: dict[type[BaseException], Code] = {
    errors.InvalidRequest: Code.INVALID_ARGUMENT,
    errors.ModelNotFound: Code.NOT_FOUND,
    errors.ModelUnavailable: Code.UNAVAILABLE,
    errors.VersionRetired: Code.FAILED_PRECONDITION,
    errors.ControlDisabled: Code.UNAVAILABLE,
    errors.QueueFull: Code.RESOURCE_EXHAUSTED,
    errors.RequestExpired: Code.DEADLINE_EXCEEDED,
    errors.RepositoryError: Code.INTERNAL,
    # A name that escapes the repository is the request's fault, not the caller's rights.
    errors.ForbiddenPath: Code.INVALID_ARGUMENT,
    errors.RuntimeFailure: Code.INTERNAL,
    errors.Unauthenticated: Code.UNAUTHENTICATED,
    errors.PermissionDenied: Code.PERMISSION_DENIED,
    errors.RateLimited: Code.RESOURCE_EXHAUSTED,
}


class _NarrowerInvalidRequest(errors.InvalidRequest):
    """Has no row of its own: inherits its parent's code along the MRO."""


RAISES: dict[str, BaseException] = {
    **{cls.__name__: cls(f"{cls.__name__} says why") for cls in ROWS},
    "subclass": _NarrowerInvalidRequest("narrower says why"),
    "unknown": KeyError("secret internals"),
}


class RaisingServicer(pb_grpc.GRPCInferenceServiceServicer):
    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        if request.id == "abort":
            await context.abort(Code.ABORTED, "aborted on purpose")
        raise RAISES[request.id]


@pytest_asyncio.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    registration.register(server, SERVICE, RaisingServicer())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(None)


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


async def _status(stub: pb_grpc.GRPCInferenceServiceStub, which: str) -> tuple[Code, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub.ModelInfer(pb.ModelInferRequest(id=which))
    return failure.value.code(), failure.value.details() or ""


def test_every_row_of_the_table_is_tested() -> None:
    assert CODES == ROWS


@pytest.mark.parametrize(("error", "code"), ROWS.items(), ids=[cls.__name__ for cls in ROWS])
def test_status_for_maps_each_row_and_keeps_the_message(
    error: type[errors.InferenceError], code: Code
) -> None:
    assert status_for(error("what went wrong")) == (code, "what went wrong")


@pytest.mark.parametrize(("error", "code"), ROWS.items(), ids=[cls.__name__ for cls in ROWS])
async def test_a_client_sees_each_row(
    stub: pb_grpc.GRPCInferenceServiceStub, error: type[errors.InferenceError], code: Code
) -> None:
    assert await _status(stub, error.__name__) == (code, f"{error.__name__} says why")


def test_the_message_is_the_errors_own_and_its_fields_stay_out_of_it() -> None:
    error = errors.InvalidRequest("input 'x': wrong", model="m", version="2", tensor="x")
    assert status_for(error) == (Code.INVALID_ARGUMENT, "input 'x': wrong")


def test_a_subclass_with_its_own_row_wins_over_its_parent() -> None:
    assert issubclass(errors.ForbiddenPath, errors.RepositoryError)
    assert CODES[errors.RepositoryError] == Code.INTERNAL
    assert status_for(errors.ForbiddenPath("outside")) == (Code.INVALID_ARGUMENT, "outside")


async def test_a_subclass_without_a_row_takes_its_parents_code(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    assert await _status(stub, "subclass") == (Code.INVALID_ARGUMENT, "narrower says why")


async def test_an_unknown_error_is_internal_with_a_generic_message_and_a_logged_trace(
    stub: pb_grpc.GRPCInferenceServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert await _status(stub, "unknown") == (Code.INTERNAL, GENERIC_MESSAGE)
    assert GENERIC_MESSAGE == "internal error; the server logged the cause"
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


async def test_a_request_whose_bytes_do_not_parse_is_invalid_before_the_handler_runs(
    channel: grpc.aio.Channel,
) -> None:
    # Were the handler run, the empty id would raise KeyError: INTERNAL.
    send_bytes = channel.unary_unary(
        f"/{SERVICE.full_name}/ModelInfer",
        request_serializer=lambda data: data,
        response_deserializer=pb.ModelInferResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await send_bytes(b"\xff\xff\xff")
    assert (failure.value.code(), failure.value.details()) == (
        Code.INVALID_ARGUMENT,
        "the request is not a valid inference.ModelInferRequest",
    )


async def test_an_abort_inside_a_handler_passes_through_unchanged(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    assert await _status(stub, "abort") == (Code.ABORTED, "aborted on purpose")
