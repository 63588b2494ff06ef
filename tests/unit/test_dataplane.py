"""The data plane over a fake store and a fake version whose futures the test resolves.

Every request's outcome is recorded once, in the data plane: success, failure, rejection
and cancellation alike.
"""

from __future__ import annotations

import asyncio
import datetime

import numpy as np
import pytest

from server.core import datatypes
from server.core.dataplane import DataPlane, ModelMetadata, ServerInfo, TensorMetadata
from server.core.errors import (
    InferenceError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    RuntimeFailure,
    VersionRetired,
)
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import Deprecation, ModelConfig
from server.core.models import IndexEntry, Outputs, ServedModel
from server.core.statistics import BatcherStatistics, Duration, ModelStats
from server.core.tensors import Signature, Tensor, TensorSpec
from server.core.validation import Validator

FP32 = datatypes.BY_NAME["FP32"]
INT64 = datatypes.BY_NAME["INT64"]
SIGNATURE = Signature(
    8,
    (TensorSpec("x", FP32, (2,)),),
    (TensorSpec("y", FP32, (2,)), TensorSpec("label", INT64, ())),
)


class FakeVersion:
    """Validates for real; `submit` hands out futures the test resolves by hand."""

    def __init__(self, version: int, config: ModelConfig | None = None) -> None:
        self.name, self.version = "m", version
        self.config = config or ModelConfig("m", max_batch_size=8)
        self.signature = SIGNATURE
        self.stats = ModelStats()
        self.submitted: list[tuple[Plan, float | None, asyncio.Future[Outputs]]] = []
        self._validator = Validator("m", SIGNATURE)

    def validate(self, request: InferenceRequest) -> Plan:
        return self._validator.check(request)

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.submitted.append((plan, deadline, future))
        return future

    def statistics(self) -> BatcherStatistics:
        return BatcherStatistics(len(self.submitted), 0, 1)

    def abort(self, error: InferenceError) -> None:
        for _, _, future in self.submitted:
            if not future.done():
                future.set_exception(error)

    async def close(self) -> None:
        pass


class FakeStore:
    def __init__(self, *versions: FakeVersion) -> None:
        self.models = {v.version: v for v in versions}

    def resolve(self, name: str, version: str = "") -> ServedModel:
        if name != "m":
            raise ModelNotFound(f"unknown model '{name}'", model=name)
        if not self.models:
            raise ModelUnavailable("model 'm' has no ready version", model=name)
        return self.models[int(version) if version else max(self.models)]

    def versions(self, name: str) -> list[ServedModel]:
        return [self.models[v] for v in sorted(self.models)]

    def loaded(self) -> list[ServedModel]:
        return self.versions("m")

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        return [IndexEntry("m", str(v), "READY", "") for v in sorted(self.models)]

    def is_ready(self) -> bool:
        return bool(self.models)

    async def load(self, name: str) -> None:
        pass

    async def unload(self, name: str) -> None:
        pass


@pytest.fixture
def versions() -> tuple[FakeVersion, FakeVersion]:
    return FakeVersion(1), FakeVersion(2)


@pytest.fixture
def dataplane(versions: tuple[FakeVersion, FakeVersion]) -> DataPlane:
    return DataPlane(FakeStore(*versions), ServerInfo("srv", "1.0"))


def request(x: np.ndarray, version: str = "", outputs: list[str] | None = None) -> InferenceRequest:
    return InferenceRequest("m", version, "req-1", [Tensor("x", FP32, x)], outputs or [])


async def answer(version: FakeVersion, outputs: Outputs, index: int = -1) -> None:
    """Resolve a submitted future once the data plane waits on it."""
    while not version.submitted:
        await asyncio.sleep(0)
    version.submitted[index][2].set_result(outputs)


async def test_infer_answers_with_the_served_version_and_records_one_success(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    x = np.ones((3, 2), np.float32)
    y, label = x * 2, np.arange(3)
    responder = asyncio.create_task(answer(versions[1], [y, label]))
    response = await dataplane.infer(request(x))
    await responder
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "req-1")
    assert [(t.name, t.datatype) for t in response.outputs] == [("y", FP32), ("label", INT64)]
    assert response.outputs[0].data is y
    stats = versions[1].stats
    assert (stats.success.count, stats.fail.count) == (1, 0)
    assert stats.last_inference_ms > 0
    plan = versions[1].submitted[0][0]
    assert plan.rows == 3
    assert plan.outputs == ("y", "label")


async def test_requested_outputs_come_back_in_the_requested_order(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    label = np.arange(1)
    responder = asyncio.create_task(answer(versions[0], [label]))
    response = await dataplane.infer(
        request(np.ones((1, 2), np.float32), version="1", outputs=["label"])
    )
    await responder
    assert [(t.name, t.datatype) for t in response.outputs] == [("label", INT64)]


async def test_a_timeout_becomes_a_deadline_on_the_loop_clock(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    before = asyncio.get_running_loop().time()
    running = dataplane.begin(request(np.ones((1, 2), np.float32)), timeout=5.0)
    after = asyncio.get_running_loop().time()
    deadline = versions[1].submitted[0][1]
    assert deadline is not None
    assert before + 5.0 <= deadline <= after + 5.0
    running.abandon()
    assert dataplane.begin(request(np.ones((1, 2), np.float32))).future is not None
    assert versions[1].submitted[1][1] is None


async def test_a_request_the_model_rejects_is_recorded_as_one_failure(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    with pytest.raises(InvalidRequest, match=r"input 'x': shape \[1, 3\] does not match"):
        await dataplane.infer(request(np.ones((1, 3), np.float32)))
    assert versions[1].stats.fail == Duration(1, versions[1].stats.fail.ns)
    assert versions[1].stats.success.count == 0
    assert versions[1].submitted == []


async def test_a_failed_execution_is_raised_and_recorded_once(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    task = asyncio.create_task(dataplane.infer(request(np.ones((1, 2), np.float32))))
    while not versions[1].submitted:
        await asyncio.sleep(0)
    versions[1].submitted[0][2].set_exception(RuntimeFailure("boom"))
    with pytest.raises(RuntimeFailure, match="boom"):
        await task
    assert (versions[1].stats.success.count, versions[1].stats.fail.count) == (0, 1)


async def test_a_cancelled_request_is_recorded_once_and_its_future_cancelled(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    task = asyncio.create_task(dataplane.infer(request(np.ones((1, 2), np.float32))))
    while not versions[1].submitted:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert versions[1].submitted[0][2].cancelled()
    assert (versions[1].stats.success.count, versions[1].stats.fail.count) == (0, 1)


async def test_unknown_models_fail_before_anything_is_recorded(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    bad = InferenceRequest("other", "", "", [], [])
    with pytest.raises(ModelNotFound, match="unknown model 'other'"):
        await dataplane.infer(bad)
    assert all(v.stats.fail.count == 0 for v in versions)


def test_metadata_reports_full_shapes_and_every_ready_version(dataplane: DataPlane) -> None:
    assert dataplane.metadata("m") == ModelMetadata(
        name="m",
        versions=("1", "2"),
        platform="onnxruntime_onnx",
        inputs=(TensorMetadata("x", "FP32", (-1, 2)),),
        outputs=(TensorMetadata("y", "FP32", (-1, 2)), TensorMetadata("label", "INT64", (-1,))),
    )


def test_statistics_select_all_one_model_or_one_version(
    dataplane: DataPlane, versions: tuple[FakeVersion, FakeVersion]
) -> None:
    assert dataplane.statistics() == list(versions)
    assert dataplane.statistics("m") == list(versions)
    assert dataplane.statistics("m", "1") == [versions[0]]
    with pytest.raises(ModelNotFound):
        dataplane.statistics("other")


def test_readiness_follows_the_store_until_shutdown_begins(dataplane: DataPlane) -> None:
    assert dataplane.ready()
    assert dataplane.model_ready("m", "1")
    assert not dataplane.model_ready("other")
    dataplane.accepting = False
    assert not dataplane.ready()
    assert dataplane.live  # a draining server is still alive


def test_an_empty_store_is_not_ready() -> None:
    dataplane = DataPlane(FakeStore(), ServerInfo("srv", "1.0"))
    assert not dataplane.ready()
    assert not dataplane.model_ready("m")


def deprecated_plane(sunset: datetime.datetime) -> tuple[DataPlane, FakeVersion]:
    notice = Deprecation(sunset, "2", "/v2/models/m/versions/2")
    old = FakeVersion(1, ModelConfig("m", max_batch_size=8, deprecated={1: notice}))
    return DataPlane(FakeStore(old, FakeVersion(2)), ServerInfo("srv", "1.0")), old


async def test_a_deprecated_version_answers_with_its_notice_and_counts_the_use() -> None:
    sunset = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)
    dataplane, old = deprecated_plane(sunset)
    responder = asyncio.create_task(answer(old, [np.ones((1, 2)), np.arange(1)]))
    response = await dataplane.infer(request(np.ones((1, 2), np.float32), version="1"))
    await responder
    assert response.deprecation == Deprecation(sunset, "2", "/v2/models/m/versions/2")
    assert old.stats.deprecated_uses == 1


async def test_after_its_sunset_a_version_is_refused_naming_its_replacement() -> None:
    sunset = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    dataplane, old = deprecated_plane(sunset)
    with pytest.raises(VersionRetired) as info:
        await dataplane.infer(request(np.ones((1, 2), np.float32), version="1"))
    assert str(info.value) == (
        "model 'm' version 1 was retired on 2020-01-01T00:00:00+00:00; use version 2 "
        "(/v2/models/m/versions/2)"
    )
    assert old.submitted == []
    assert old.stats.fail.count == 1
