"""Shared fixtures for the in-process unit tests: tiny ONNX repositories and a real server.

Unit tests may import `server` and the generated `inference` package, but never
`tritonclient`: its generated modules register the same message names in the default
descriptor pool as ours do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import onnx
import pytest
import pytest_asyncio
from onnx import TensorProto, helper

from inference import grpc_service_pb2_grpc as pb_grpc
from server.app import InferenceServer
from server.settings import Settings

# onnx 1.23 writes IR version 14 by default, which this ONNX Runtime refuses.
IR_VERSION = 9
OPSET = 17

# The tiny model frees its one slot within microseconds, so with no queue delay a burst of
# in-process unary calls sometimes formed almost no batches (991 executions for 1,000
# requests); 2 ms lets every burst batch up, so "batching happened" is not left to chance.
DOUBLE_CONFIG = """\
max_batch_size: 16
instances: 1
dynamic_batching:
  max_queue_delay_us: 2000
  max_queue_size: 4096
"""


def affine_model(width: int = 4) -> onnx.ModelProto:
    """y = x * 2 + 1 on FP32 inputs of shape [batch, width], batch dynamic."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["twice"]),
            helper.make_node("Add", ["twice", "one"], ["y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
        ],
    )
    model = helper.make_model(
        graph, ir_version=IR_VERSION, opset_imports=[helper.make_opsetid("", OPSET)]
    )
    onnx.checker.check_model(model)
    return model


def write_model(
    root: Path, name: str, model: onnx.ModelProto, config: str, version: int = 1
) -> Path:
    """Write `root/name/config.yaml` and `root/name/version/model.onnx`."""
    model_dir = root / name
    (model_dir / str(version)).mkdir(parents=True)
    (model_dir / "config.yaml").write_text(config)
    onnx.save(model, model_dir / str(version) / "model.onnx")
    return model_dir


@pytest.fixture
def double_repository(tmp_path: Path) -> Path:
    """A repository with one model, `double`: y = x * 2 + 1, x of shape [batch, 4]."""
    root = tmp_path / "models"
    write_model(root, "double", affine_model(), DOUBLE_CONFIG)
    return root


@pytest_asyncio.fixture
async def stub(double_repository: Path) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    """A stub over a ready channel to the real grpc.aio server, started in process on a
    free port and serving `double_repository`."""
    settings = Settings(
        model_repository=double_repository,
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=1.0,
    )
    server = InferenceServer(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        await channel.close()
        await server.stop()
