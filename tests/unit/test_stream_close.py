"""A ModelStreamInfer stream closed with requests still queued: each one is counted.

The real grpc.aio server and servicer, over the real data plane and a fake version whose
futures resolve only when the test says, so "queued" is exact rather than a race against
a fast model. The client cancels its call, which is how a stream closes while replies are
owed (a half-close waits for them); the servicer then cancels what it still holds, and
every such request must show up in the statistics as a failure, of type CancelledError,
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import pytest
import pytest_asyncio

from inference import grpc_service_pb2 as pb
from inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub as Stub
from server.api.grpc.servicer import InferenceServicer
from server.core import datatypes
from server.core.dataplane import DataPlane, ServerInfo
from server.core.errors import InferenceError, ModelNotFound
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import ModelConfig
from server.core.models import IndexEntry, Outputs, ServedModel
from server.core.statistics import BatcherStatistics, ModelStats
from server.core.tensors import Signature, TensorSpec
from server.core.validation import Validator

LOOPS = ("asyncio", "uvloop")  # the server runs on uvloop; the tests on both loops
pytestmark = pytest.mark.timeout(30)

FP32 = datatypes.BY_NAME["FP32"]
SIGNATURE = Signature(8, (TensorSpec("x", FP32, (2,)),), (TensorSpec("y", FP32, (2,)),))
WAIT_S = 5.0


class HeldVersion:
    """Validates for real; every submitted plan stays queued until the test resolves it."""

    name, version = "m", 1

    def __init__(self) -> None:
        self.config = ModelConfig("m", max_batch_size=8)
        self.signature = SIGNATURE
        self.stats = ModelStats()
        self.queued: list[asyncio.Future[Outputs]] = []
        self._validator = Validator("m", SIGNATURE)

    def validate(self, request: InferenceRequest) -> Plan:
        return self._validator.check(request)

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.queued.append(future)
        return future

    def answer(self, index: int) -> None:
        self.queued[index].set_result([np.full((1, 2), index, dtype=np.float32)])

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(sum(not f.done() for f in self.queued), 0, 1)

    def abort(self, error: InferenceError) -> None:
        pass

    async def close(self) -> None:
        pass


class OneModel:
    def __init__(self, served: HeldVersion) -> None:
        self._served = served

    def resolve(self, name: str, version: str = "") -> ServedModel:
        if name != "m":
            raise ModelNotFound(f"unknown model '{name}'", model=name)
        return self._served

    def versions(self, name: str) -> list[ServedModel]:
        return [self._served]

    def loaded(self) -> list[ServedModel]:
        return [self._served]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return [IndexEntry("m", "1", "READY", "")]

    def is_ready(self) -> bool:
        return True

    async def load(self, name: str) -> None:
        pass

    async def unload(self, name: str) -> None:
        pass


@pytest_asyncio.fixture
async def served() -> HeldVersion:
    return HeldVersion()


@pytest_asyncio.fixture
async def stub(served: HeldVersion) -> AsyncIterator[Stub]:
    server = grpc.aio.server()
    dataplane = DataPlane(OneModel(served), ServerInfo("test", "0"))
    InferenceServicer(dataplane, max_elements=1 << 20).register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Stub(channel)
    finally:
        await channel.close()
        await server.stop(None)


def _request(index: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id=f"req-{index}")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.zeros((1, 2), dtype=np.float32).tobytes())
    return request


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.005)


async def _open_stream(stub: Stub, sent: int) -> grpc.aio.StreamStreamCall:
    """A stream that sends `sent` requests and then stays open, as a client that has
    replies owed and has not finished writing."""
    stay_open = asyncio.Event()

    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        for index in range(sent):
            yield _request(index)
        await stay_open.wait()

    return stub.ModelStreamInfer(requests())


def _cancellations(stats: ModelStats) -> int:
    buckets = stats.failure_buckets.get(asyncio.CancelledError)
    return 0 if buckets is None else buckets.count


async def test_closing_a_stream_counts_every_queued_request_as_cancelled(
    stub: Stub, served: HeldVersion
) -> None:
    sent = 5
    call = await _open_stream(stub, sent)
    await _until(lambda: len(served.queued) == sent, f"{sent} requests queued")

    call.cancel()
    await _until(lambda: served.stats.fail.count == sent, f"{sent} failures counted")
    await asyncio.sleep(0.05)  # anything counted twice would be by now
    assert all(future.cancelled() for future in served.queued)
    assert served.stats.fail.count == sent
    assert served.stats.success.count == 0
    assert _cancellations(served.stats) == sent
    # ModelStatistics reports them too.
    reply = await stub.ModelStatistics(pb.ModelStatisticsRequest(name="m"))
    [stats] = reply.model_stats
    assert (stats.inference_stats.fail.count, stats.inference_stats.success.count) == (sent, 0)


async def test_closing_a_stream_counts_the_answered_as_successes_and_the_rest_as_cancelled(
    stub: Stub, served: HeldVersion
) -> None:
    sent, answered = 6, 2
    call = await _open_stream(stub, sent)
    await _until(lambda: len(served.queued) == sent, f"{sent} requests queued")
    for index in range(answered):
        served.answer(index)
    replies = [await call.read() for _ in range(answered)]
    assert sorted(reply.infer_response.id for reply in replies) == ["req-0", "req-1"]
    assert all(reply.error_message == "" for reply in replies)

    call.cancel()
    left = sent - answered
    await _until(lambda: served.stats.fail.count == left, f"{left} failures counted")
    await asyncio.sleep(0.05)
    assert (served.stats.success.count, served.stats.fail.count) == (answered, left)
    assert _cancellations(served.stats) == left
