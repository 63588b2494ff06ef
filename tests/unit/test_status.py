"""Domain errors -> gRPC status: every row of `server.status.CODES`, through a real stub.

A throwaway servicer raises the error named by the request's id from a ModelInfer wrapped
in `grpc_errors`, on a real grpc.aio server on port 0; the client sees the code and the
message. Unknown exceptions become INTERNAL with the generic message and a logged trace.
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
from server import errors
from server.status import CODES, GENERIC_MESSAGE, grpc_errors, status_for

Code: TypeAlias = grpc.StatusCode

ROWS: dict[type[BaseException], Code] = {
    errors.InvalidRequest: Code.INVALID_ARGUMENT,
    errors.ModelNotFound: Code.NOT_FOUND,
    errors.ModelUnavailable: Code.UNAVAILABLE,
    errors.QueueFull: Code.RESOURCE_EXHAUSTED,
    errors.RequestExpired: Code.DEADLINE_EXCEEDED,
    errors.RepositoryError: Code.INTERNAL,
    errors.ForbiddenPath: Code.PERMISSION_DENIED,
    errors.RuntimeFailure: Code.INTERNAL,
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
async def stub() -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(RaisingServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop(None)


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


def test_a_subclass_with_its_own_row_wins_over_its_parent() -> None:
    assert issubclass(errors.ForbiddenPath, errors.RepositoryError)
    assert status_for(errors.ForbiddenPath("outside")) == (Code.PERMISSION_DENIED, "outside")


async def test_a_subclass_without_a_row_takes_its_parents_code(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    assert await _status(stub, "subclass") == (Code.INVALID_ARGUMENT, "narrower says why")


async def test_an_unknown_error_is_internal_with_a_generic_message_and_a_logged_trace(
    stub: pb_grpc.GRPCInferenceServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="server.status"):
        assert await _status(stub, "unknown") == (Code.INTERNAL, GENERIC_MESSAGE)
    assert GENERIC_MESSAGE == "internal error; the server logged the cause"
    [record] = [r for r in caplog.records if r.name == "server.status"]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], KeyError)


async def test_an_abort_inside_a_handler_passes_through_unchanged(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    assert await _status(stub, "abort") == (Code.ABORTED, "aborted on purpose")
