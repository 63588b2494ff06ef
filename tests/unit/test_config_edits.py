"""A config.yaml edit that only moves a label or deprecates a version rebuilds nothing.

The flows docs/operations.md gives ("Update models without downtime", "Deprecate a
version") are config edits followed by a reload. Through the real in-process server and
ONNX Runtime: the statistics of every version survive the reload, and the new label or
deprecation takes effect at once. The model is `double` (conftest): y = x * 2 + 1.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from tests.unit.conftest import DOUBLE_CONFIG, affine_model, serving, write_model

pytestmark = pytest.mark.timeout(60)

MODEL = "double"
BASE = DOUBLE_CONFIG + "version_policy: {all: true}\n"


def _request(version: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, model_version=version)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.arange(4, dtype=np.float32).tobytes())
    return request


async def _infer(stub: pb_grpc.GRPCInferenceServiceStub, version: str) -> tuple[str, dict]:
    """The answering version and the initial metadata of one request."""
    call = stub.ModelInfer(_request(version))
    response = await call
    y = np.frombuffer(response.raw_output_contents[0], np.float32)
    assert y.tolist() == [1, 3, 5, 7]
    return response.model_version, dict(await call.initial_metadata())


async def _counts(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[str, int]:
    statistics = await stub.ModelStatistics(pb.ModelStatisticsRequest(name=MODEL))
    return {s.version: s.inference_count for s in statistics.model_stats}


async def _reload(stub: pb_grpc.GRPCInferenceServiceStub, root: Path, config: str) -> None:
    (root / MODEL / "config.yaml").write_text(config)
    await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=MODEL))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    model_dir = write_model(root, MODEL, affine_model(), BASE)
    (model_dir / "2").mkdir()
    onnx.save(affine_model(), model_dir / "2" / "model.onnx")
    return root


async def test_statistics_survive_a_label_edit_and_a_deprecation_edit(root: Path) -> None:
    async with serving(root) as stub:
        for _ in range(3):
            assert (await _infer(stub, "1"))[0] == "1"
        assert (await _infer(stub, "2"))[0] == "2"
        assert await _counts(stub) == {"1": 3, "2": 1}

        # A label edit: the statistics stay, and the label answers at once.
        await _reload(stub, root, BASE + "labels: {stable: 1}\n")
        assert await _counts(stub) == {"1": 3, "2": 1}
        assert (await _infer(stub, "stable"))[0] == "1"
        assert await _counts(stub) == {"1": 4, "2": 1}

        # The label moves and version 1 is deprecated: still no rebuild.
        await _reload(
            stub,
            root,
            BASE
            + "labels: {stable: 2}\n"
            + "deprecated:\n  - {version: 1, sunset: 2099-06-30, replacement: stable}\n",
        )
        assert await _counts(stub) == {"1": 4, "2": 1}
        assert (await _infer(stub, "stable"))[0] == "2"
        version, metadata = await _infer(stub, "1")
        assert version == "1"
        assert metadata["deprecation"] == "true"
        assert metadata["sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"
        assert metadata["link"] == '</v2/models/double/versions/stable>; rel="successor-version"'
        assert "deprecation" not in (await _infer(stub, "2"))[1]
        assert await _counts(stub) == {"1": 5, "2": 3}

        # The sunset moves into the past: version 1 is refused, and nothing was rebuilt.
        await _reload(
            stub,
            root,
            BASE
            + "labels: {stable: 2}\n"
            + "deprecated:\n  - {version: 1, sunset: 2020-01-31, replacement: stable}\n",
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _infer(stub, "1")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "use version stable" in (refused.value.details() or "")
        assert await _counts(stub) == {"1": 5, "2": 3}


async def test_any_other_edit_still_rebuilds_and_resets_the_statistics(root: Path) -> None:
    async with serving(root) as stub:
        await _infer(stub, "1")
        assert await _counts(stub) == {"1": 1, "2": 0}
        await _reload(stub, root, BASE.replace("max_batch_size: 16", "max_batch_size: 8"))
        assert await _counts(stub) == {"1": 0, "2": 0}
        config = await stub.ModelConfig(pb.ModelConfigRequest(name=MODEL))
        assert config.config.max_batch_size == 8
