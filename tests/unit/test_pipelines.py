"""Pipelines end to end in process: a real grpc.aio server, real ONNX Runtime, a user's
Python step, a built-in step, and a model of the repository resolved per request.

The repository: `linear` (y = a * x + b on FP32 [batch, 4]) and `scaled`, a pipeline:
x -> Scale (pipeline_steps.py, x * 10) -> linear -> softmax -> p; outputs y and p.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import pytest_asyncio
from onnx import TensorProto, helper
from pipeline_steps import Held

from inference import grpc_service_pb2 as pb
from inference import model_config_pb2 as mc
from inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub as Stub
from server.app import InferenceServer
from server.execution.pipeline import PipelineVersion
from server.settings import Settings

pytestmark = pytest.mark.timeout(60)

LINEAR = "max_batch_size: 16\n"
SCALED = """\
platform: ensemble
max_batch_size: 8
inputs:
  - {name: x, datatype: FP32, dims: [4]}
outputs:
  - {name: y, datatype: FP32, dims: [4]}
  - {name: p, datatype: FP32, dims: [4]}
class_labels: {p: labels.txt}
steps:
  - python: pipeline_steps:Scale
    options: {factor: 10}
    input_map: {input: x}
    output_map: {output: scaled}
  - model: linear
    input_map: {x: scaled}
  - step: softmax
    input_map: {input: y}
    output_map: {output: p}
"""


def _linear(a: float, b: float) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            helper.make_tensor("a", TensorProto.FLOAT, [], [a]),
            helper.make_tensor("b", TensorProto.FLOAT, [], [b]),
        ],
    )
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write_model(root: Path, name: str, config: str, versions: dict[int, bytes]) -> None:
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.yaml").write_text(config)
    for number, data in versions.items():
        (root / name / str(number)).mkdir(exist_ok=True)
        (root / name / str(number) / "model.onnx").write_bytes(data)


def _write_pipeline(root: Path, name: str, config: str) -> None:
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "config.yaml").write_text(config)
    (root / name / "labels.txt").write_text("north\neast\nsouth\nwest\n")


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    _write_model(root, "linear", LINEAR, {1: _linear(2, 1)})
    _write_pipeline(root, "scaled", SCALED)
    return root


@dataclass
class Served:
    server: InferenceServer
    stub: Stub
    root: Path

    def pipeline(self, name: str = "scaled") -> PipelineVersion:
        served = self.server.dataplane.model(name)
        assert isinstance(served, PipelineVersion)
        return served


@pytest_asyncio.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    settings = Settings(
        model_repository=repository, host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0
    )
    server = InferenceServer(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield Served(server, Stub(channel), repository)
    finally:
        await channel.close()
        await server.stop()


def _request(
    x: np.ndarray, model: str = "scaled", outputs: dict[str, int] | None = None
) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=x.shape)
    request.raw_input_contents.append(x.astype(np.float32).tobytes())
    for name, count in (outputs or {}).items():
        output = request.outputs.add(name=name)
        if count:
            output.parameters["classification"].int64_param = count
    return request


def _outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    arrays = {}
    for output, raw in zip(response.outputs, response.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            items, at = [], 0
            while at < len(raw):
                length = int.from_bytes(raw[at : at + 4], "little")
                items.append(raw[at + 4 : at + 4 + length])
                at += 4 + length
            arrays[output.name] = np.array(items, dtype=object).reshape(tuple(output.shape))
        else:
            dtype = {"FP32": np.float32, "INT64": np.int64}[output.datatype]
            arrays[output.name] = np.frombuffer(raw, dtype).reshape(tuple(output.shape))
    return arrays


async def _error(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())


def _softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


X = np.array([[0.1, 0.2, 0.3, 0.4], [0.0, -0.1, 0.05, 0.0]], np.float32)


async def test_a_pipeline_runs_its_steps_and_model_in_order(served: Served) -> None:
    response = await served.stub.ModelInfer(_request(X))
    assert (response.model_name, response.model_version) == ("scaled", "1")
    got = _outputs(response)
    np.testing.assert_allclose(got["y"], X * 10 * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(got["p"], _softmax(X * 10 * 2 + 1), rtol=1e-6)


async def test_metadata_and_config_describe_the_pipeline_itself(served: Served) -> None:
    metadata = await served.stub.ModelMetadata(pb.ModelMetadataRequest(name="scaled"))
    assert metadata.platform == "ensemble"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("y", "FP32", [-1, 4]),
        ("p", "FP32", [-1, 4]),
    ]
    config = (await served.stub.ModelConfig(pb.ModelConfigRequest(name="scaled"))).config
    assert (config.platform, config.max_batch_size) == ("ensemble", 8)
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("x", mc.TYPE_FP32, [4])]
    # As Triton reports an ensemble: no backend, instance groups or dynamic batching, and
    # the models it calls (not its other steps) under ensemble_scheduling.
    assert config.backend == "" and not config.instance_group
    assert config.WhichOneof("scheduling_choice") == "ensemble_scheduling"
    assert [
        (s.model_name, s.model_version, dict(s.input_map), dict(s.output_map))
        for s in config.ensemble_scheduling.step
    ] == [("linear", -1, {"x": "scaled"}, {})]
    model = (await served.stub.ModelConfig(pb.ModelConfigRequest(name="linear"))).config
    assert model.backend == "onnxruntime" and model.HasField("dynamic_batching")
    assert [g.count for g in model.instance_group] == [1]


async def test_classification_applies_to_pipeline_and_model_outputs(served: Served) -> None:
    x = np.array([[0.0, 0.3, 0.1, 0.2]], np.float32)
    pipeline = _outputs(await served.stub.ModelInfer(_request(x, outputs={"p": 2, "y": 0})))
    p = _softmax(x * 20 + 1)[0]
    assert pipeline["p"].tolist() == [[f"{p[1]:f}:1:east".encode(), f"{p[3]:f}:3:west".encode()]]
    np.testing.assert_allclose(pipeline["y"], x * 20 + 1, rtol=1e-6)
    model = _outputs(await served.stub.ModelInfer(_request(x, "linear", outputs={"y": 1})))
    assert model["y"].tolist() == [[b"1.600000:1"]]  # no labels for linear
    metadata = await served.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert "classification" in metadata.extensions


@pytest.mark.parametrize("model", ["scaled", "linear"])
async def test_a_bad_classification_parameter_is_invalid_argument(
    served: Served, model: str
) -> None:
    request = _request(X, model, outputs={"y": 0})
    request.outputs[0].parameters["classification"].string_param = "two"
    message = await _error(served.stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message == (
        "output 'y': parameter 'classification' must be a non-negative integer "
        "(the number of classes), got 'two'"
    )


async def test_a_row_a_step_refuses_fails_that_request_alone_naming_the_step(
    served: Served,
) -> None:
    bad = np.array([[0.0, np.nan, 0.0, 0.0]], np.float32)
    calls = [served.stub.ModelInfer(_request(X if i % 2 else bad)) for i in range(8)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    for index, result in enumerate(results):
        if index % 2:
            assert isinstance(result, pb.ModelInferResponse), result
            np.testing.assert_allclose(_outputs(result)["y"], X * 20 + 1, rtol=1e-6)
        else:
            assert isinstance(result, grpc.aio.AioRpcError)
            assert result.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert result.details() == (
                "pipeline 'scaled' step 'Scale': input 'input' row 0 is not finite"
            )


async def test_a_step_that_breaks_its_promise_is_internal_naming_the_step(
    served: Served,
) -> None:
    _write_pipeline(served.root, "wrong", SCALED.replace("Scale", "WrongType"))
    await served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="wrong"))
    message = await _error(
        served.stub.ModelInfer(_request(X[:1], "wrong")), grpc.StatusCode.INTERNAL
    )
    assert message == (
        "pipeline 'wrong' step 'WrongType': step 'wrong/WrongType' returned output 'output' "
        "as float64 [1, 4]; it declared FP32 [1, 4]"
    )


async def test_the_model_is_resolved_per_request_so_its_reload_is_picked_up(
    served: Served,
) -> None:
    before = _outputs(await served.stub.ModelInfer(_request(X)))["y"]
    _write_model(served.root, "linear", LINEAR, {2: _linear(3, 0)})
    await served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="linear"))
    after = _outputs(await served.stub.ModelInfer(_request(X)))["y"]
    np.testing.assert_allclose(before, X * 20 + 1, rtol=1e-6)
    np.testing.assert_allclose(after, X * 30, rtol=1e-6)


async def test_a_pipeline_whose_model_is_unloaded_is_unavailable_naming_the_step(
    served: Served,
) -> None:
    await served.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="linear"))
    message = await _error(served.stub.ModelInfer(_request(X)), grpc.StatusCode.UNAVAILABLE)
    assert message == "pipeline 'scaled' step 'linear': model 'linear' has no ready version"
    await served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="linear"))
    await served.stub.ModelInfer(_request(X))


async def test_requests_to_the_pipeline_and_to_its_model_share_a_batch(served: Served) -> None:
    # A batch of `pair` leaves at two rows, or after 5 s: one execution for two requests
    # means the pipeline's request joined the direct one in the model's queue.
    pair = "max_batch_size: 16\ndynamic_batching:\n  max_queue_delay_us: 5000000\n"
    pair += "  preferred_batch_sizes: [2]\n"
    _write_model(served.root, "pair", pair, {1: _linear(2, 1)})
    _write_pipeline(served.root, "via_pair", SCALED.replace("model: linear", "model: pair"))
    for name in ("pair", "via_pair"):
        await served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name))
    direct, piped = await asyncio.gather(
        served.stub.ModelInfer(_request(X[:1], "pair")),
        served.stub.ModelInfer(_request(X[1:], "via_pair")),
    )
    np.testing.assert_allclose(_outputs(direct)["y"], X[:1] * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(_outputs(piped)["y"], X[1:] * 20 + 1, rtol=1e-6)
    stats = await served.stub.ModelStatistics(pb.ModelStatisticsRequest(name="pair"))
    [model] = stats.model_stats
    assert (model.execution_count, model.inference_count) == (1, 2)
    assert model.inference_stats.success.count == 2  # the pipeline's request counts too


async def test_statistics_per_pipeline_and_per_step(served: Served) -> None:
    for rows in (1, 2, 1):
        await served.stub.ModelInfer(_request(np.ones((rows, 4), np.float32)))
    stats = await served.stub.ModelStatistics(pb.ModelStatisticsRequest(name="scaled"))
    [pipeline] = stats.model_stats
    assert (pipeline.inference_count, pipeline.execution_count) == (4, 3)
    inference = pipeline.inference_stats
    assert inference.success.count == 3
    # Scale runs before the model, softmax after it.
    assert inference.compute_input.ns > 0 and inference.compute_infer.ns > 0
    assert inference.compute_output.ns > 0
    steps = served.pipeline().step_stats
    assert list(steps) == ["Scale", "linear", "softmax"]
    for name, step in steps.items():
        assert step.success.count == 3, name
    assert steps["Scale"].inference_count == 4 and steps["softmax"].execution_count >= 1
    assert steps["linear"].execution_count == 0  # the model's batcher counts those:
    linear = await served.stub.ModelStatistics(pb.ModelStatisticsRequest(name="linear"))
    assert linear.model_stats[0].inference_count == 4


BROKEN = [
    (
        SCALED.replace("model: linear", "model: nope"),
        "pipeline 'broken' step 'nope': unknown model 'nope'",
    ),
    (
        SCALED.replace("dims: [4]}\noutputs", "dims: [3]}\noutputs"),
        "pipeline 'broken' step 'linear': model 'linear' input 'x' is FP32 [4], but tensor "
        "'scaled' is FP32 [3]",
    ),
    (
        SCALED.replace("input_map: {x: scaled}", "input_map: {x: scaled_x}"),
        "pipeline 'broken' step 'linear': input 'x' reads tensor 'scaled_x', which neither the "
        "pipeline's inputs nor an earlier step provide; there are ['scaled', 'x']",
    ),
    (
        SCALED.replace("step: softmax", "step: softmaks"),
        "pipeline 'broken' step 'softmaks': unknown step 'softmaks'; built-in steps: "
        "['argmax', 'classify', 'decode_image', 'l2_normalize', 'mean_pool', 'softmax', "
        "'tokenize']",
    ),
    (
        SCALED.replace("output_map: {output: p}", "output_map: {output: q}"),
        "pipeline 'broken': output 'p' is not produced by any step; there are "
        "['q', 'scaled', 'x', 'y']",
    ),
    (
        SCALED.replace("output_map: {output: p}", "output_map: {output: x}"),
        "pipeline 'broken' step 'softmax': writes tensor(s) ['x'], which the pipeline already "
        "has; map the outputs to new names (output_map)",
    ),
    (
        SCALED.replace("pipeline_steps:Scale", "no_such_module:Scale"),
        "pipeline 'broken' step 'Scale': python: cannot import 'no_such_module': "
        "No module named 'no_such_module'",
    ),
    (
        SCALED.replace("max_batch_size: 8", "max_batch_size: 32"),
        "pipeline 'broken' step 'linear': model 'linear' takes at most 16 rows "
        "(max_batch_size), fewer than the pipeline's 32",
    ),
    (
        SCALED.replace("step: softmax", "step: softmax\n    options: {axis: 1}"),
        "pipeline 'broken' step 'softmax': unknown option(s) ['axis']; this step takes []",
    ),
    (
        SCALED.replace("options: {factor: 10}", "options: {}"),
        "pipeline 'broken' step 'Scale': KeyError('factor')",
    ),
]


@pytest.mark.parametrize(("config", "reason"), BROKEN)
async def test_a_pipeline_that_cannot_work_refuses_to_load_and_says_why(
    served: Served, config: str, reason: str
) -> None:
    _write_pipeline(served.root, "broken", config)
    message = await _error(
        served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="broken")),
        grpc.StatusCode.INTERNAL,
    )
    assert message == f"model 'broken' could not be loaded: version 1: {reason}"
    index = await served.stub.RepositoryIndex(pb.RepositoryIndexRequest())
    [entry] = [m for m in index.models if m.name == "broken"]
    assert (entry.state, entry.reason) == ("UNAVAILABLE", f"version 1: {reason}")
    # The rest of the server is unaffected.
    np.testing.assert_allclose(
        _outputs(await served.stub.ModelInfer(_request(X)))["y"], X * 20 + 1, rtol=1e-6
    )


async def test_a_pipeline_loads_after_the_models_it_names_whatever_the_names(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    _write_model(root, "zz_linear", LINEAR, {1: _linear(2, 1)})
    _write_pipeline(root, "aa_pipeline", SCALED.replace("model: linear", "model: zz_linear"))
    server = InferenceServer(Settings(model_repository=root, host="127.0.0.1", grpc_port=0))
    await server.start()
    try:
        states = {(e.name, e.state) for e in server.dataplane.index(ready_only=False)}
        assert states == {("aa_pipeline", "READY"), ("zz_linear", "READY")}
    finally:
        await server.stop()


async def test_an_unloaded_pipeline_finishes_what_it_started(served: Served) -> None:
    _write_pipeline(
        served.root, "held", SCALED.replace("pipeline_steps:Scale", "pipeline_steps:Held")
    )
    await served.stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="held"))
    Held.running.clear()
    Held.release.clear()
    call = asyncio.ensure_future(served.stub.ModelInfer(_request(X, "held")))
    assert await asyncio.to_thread(Held.running.wait, 10)
    unload = asyncio.ensure_future(
        served.stub.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name="held"))
    )
    await asyncio.sleep(0.2)
    assert not unload.done() and not call.done()  # the unload waits for the request
    Held.release.set()
    np.testing.assert_allclose(_outputs(await call)["y"], X * 20 + 1, rtol=1e-6)
    await unload
    message = await _error(served.stub.ModelInfer(_request(X, "held")), grpc.StatusCode.UNAVAILABLE)
    assert message == "model 'held' has no ready version"
