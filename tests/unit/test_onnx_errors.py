"""Every ONNX Runtime error has a defined status (server/execution/onnx.py `runtime_errors`).

Since onnxruntime 1.32 the binding's exception classes (Fail, InvalidArgument,
RuntimeException, NotImplemented, EPFail, ...) derive from Exception only, not
RuntimeError. The model here, `reshape`, is real and fails at run time: it reshapes an
input of any length to [2, 3], so six elements work and any other count makes ONNX Runtime
raise Fail. Sending INT64 to its FP32 input makes it raise InvalidArgument.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi import onnxruntime_pybind11_state as ORT

from inference import grpc_service_pb2 as pb
from server.api.grpc.status import GENERIC_MESSAGE, status_for
from server.core.errors import InvalidRequest, RuntimeFailure
from server.execution.onnx import ORT_ERRORS, OnnxModel, runtime_errors
from server.repository.config import load_config
from tests.unit.conftest import IR_VERSION, OPSET, serving, write_model

pytestmark = pytest.mark.timeout(60)

MODEL = "reshape"


def reshape_model() -> onnx.ModelProto:
    """y = reshape(x, [2, 3]) with x of shape [n]: fails unless n is 6."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [2, 3])
    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            "reshape",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
            initializer=[shape],
        ),
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    # Warmed up with six elements: the default of one would fail the load.
    config = "max_batch_size: 0\nwarmup:\n  - name: x\n    shape: [6]\n"
    write_model(root, MODEL, reshape_model(), config)
    return root


@pytest.fixture
def model(repository: Path) -> OnnxModel:
    return OnnxModel(repository / MODEL / "1" / "model.onnx", load_config(repository / MODEL))


def test_a_run_that_works_still_works(model: OnnxModel) -> None:
    [y] = model.run({"x": np.arange(6, dtype=np.float32)}, ["y"])
    assert y.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_a_failing_node_is_a_runtime_failure_naming_the_model(model: OnnxModel) -> None:
    with pytest.raises(RuntimeFailure) as failure:
        model.run({"x": np.zeros(5, dtype=np.float32)}, ["y"])
    assert isinstance(failure.value.__cause__, ORT.Fail)
    assert not isinstance(failure.value.__cause__, RuntimeError)  # why RuntimeError missed it
    assert failure.value.model == MODEL
    assert str(failure.value).startswith(f"model '{MODEL}' failed while executing: ")
    assert "Reshape" in str(failure.value)
    assert status_for(failure.value) == (grpc.StatusCode.INTERNAL, str(failure.value))


def test_an_input_the_runtime_rejects_is_an_invalid_request(model: OnnxModel) -> None:
    with pytest.raises(InvalidRequest) as failure:
        model.run({"x": np.zeros(6, dtype=np.int64)}, ["y"])
    assert isinstance(failure.value.__cause__, ORT.InvalidArgument)
    assert str(failure.value).startswith(f"model '{MODEL}' rejected the input: ")
    assert status_for(failure.value)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_a_terminated_session_fails_its_runs_with_runtime_failure(model: OnnxModel) -> None:
    model.terminate()
    with pytest.raises(RuntimeFailure, match="terminate"):
        model.run({"x": np.zeros(6, dtype=np.float32)}, ["y"])


def test_every_exception_class_of_the_binding_is_covered() -> None:
    defined = {
        value
        for value in vars(ORT).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    assert {ORT.Fail, ORT.RuntimeException, ORT.NotImplemented, ORT.EPFail} <= defined
    assert defined <= set(ORT_ERRORS)


@pytest.mark.parametrize(
    "cls", [cls for cls in ORT_ERRORS if cls is not ORT.InvalidArgument], ids=lambda c: c.__name__
)
def test_each_other_runtime_error_is_a_runtime_failure(cls: type[Exception]) -> None:
    expected = f"^model '{MODEL}' failed while executing: boom$"
    with pytest.raises(RuntimeFailure, match=expected), runtime_errors(MODEL):
        raise cls("boom")


def test_an_error_of_the_servers_own_passes_through_unchanged() -> None:
    with pytest.raises(KeyError), runtime_errors(MODEL):
        raise KeyError("not the runtime's")


def _request(values: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, id="r")
    request.inputs.add(name="x", datatype="FP32", shape=list(values.shape))
    request.raw_input_contents.append(values.astype(np.float32).tobytes())
    return request


async def test_a_client_gets_internal_with_the_models_message_and_one_logged_trace(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(repository) as stub:
        ok = await stub.ModelInfer(_request(np.arange(6)))
        assert np.frombuffer(ok.raw_output_contents[0], np.float32).tolist() == list(range(6))
        caplog.clear()
        with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ModelInfer(_request(np.zeros(5)))
        traced = [r for r in caplog.records if r.exc_info is not None]
        assert failure.value.code() == grpc.StatusCode.INTERNAL
        assert failure.value.details() != GENERIC_MESSAGE
        assert failure.value.details().startswith(f"model '{MODEL}' failed while executing: ")
        assert [r.levelno for r in traced] == [logging.ERROR]
        assert isinstance(traced[0].exc_info[1], RuntimeFailure)  # type: ignore[index]
        assert not any("unexpected error" in r.getMessage() for r in caplog.records)
        # the server serves on after the failure
        ok = await stub.ModelInfer(_request(np.arange(6)))
        assert len(ok.raw_output_contents) == 1
