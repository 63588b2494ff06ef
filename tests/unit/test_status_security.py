"""The security errors' rows of the status table, through a real stub: UNAUTHENTICATED,
PERMISSION_DENIED, and RESOURCE_EXHAUSTED with its retry hint (RetryInfo, retry-after)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc.status import CODES, grpc_errors, retry_trailers, trailers_for
from server.core import errors

RAISES: dict[str, errors.InferenceError] = {
    "unauthenticated": errors.Unauthenticated("who are you"),
    "denied": errors.PermissionDenied("not yours"),
    "limited": errors.RateLimited("slow down", retry_after_s=2.5),
}


class RaisingServicer(pb_grpc.GRPCInferenceServiceServicer):
    @grpc_errors
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        raise RAISES[request.id]


@pytest_asyncio.fixture
async def stub() -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(RaisingServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    await server.stop(0)


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
        ("denied", grpc.StatusCode.PERMISSION_DENIED),
        ("limited", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_each_security_error_has_its_code(
    stub: pb_grpc.GRPCInferenceServiceStub, case: str, code: grpc.StatusCode
) -> None:
    assert CODES[type(RAISES[case])] == code
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(pb.ModelInferRequest(id=case))
    assert info.value.code() == code
    assert info.value.details() == str(RAISES[case])


async def test_rate_limited_carries_retry_info_and_retry_after(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(pb.ModelInferRequest(id="limited"))
    status = rpc_status.from_call(info.value)
    assert status is not None and status.message == "slow down"
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry)
    assert retry.retry_delay.seconds == 2 and retry.retry_delay.nanos == 500_000_000
    assert dict(info.value.trailing_metadata() or ())["retry-after"] == "3"


def test_other_errors_carry_no_trailers() -> None:
    assert trailers_for(errors.PermissionDenied("no")) == ()
    assert trailers_for(ValueError("x")) == ()


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert dict(retry_trailers("m", 0.01))["retry-after"] == "1"
    assert dict(retry_trailers("m", 1.0))["retry-after"] == "1"
    assert dict(retry_trailers("m", 1.01))["retry-after"] == "2"
