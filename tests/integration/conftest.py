"""Shared fixtures: real servers on port 0, clients for them, and tiny model repositories.

Clients are `tritonclient.grpc` and raw stubs from tritonclient's own generated modules (for
what tritonclient cannot say: typed contents, malformed requests). Never the server's
`inference` package: see processes.py. Helpers that several test modules need are handed
out as fixtures, because test modules cannot import this file reliably.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from onnx import NodeProto, TensorProto, ValueInfoProto, helper
from processes import ROOT, ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor, triton_to_np_dtype

# The typed contents field of each V2 datatype (PROTOCOL.md); FP16 and BF16 are raw only.
TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
Request: TypeAlias = service_pb2.ModelInferRequest


# --- servers and clients --------------------------------------------------------------------


@pytest.fixture(scope="session")
def default_server() -> Iterator[ServerProcess]:
    """The default repository (`make models`): digits 1 and 2, text_direction, minilm,
    silero_vad."""
    with start_server(ROOT / "models") as server:
        yield server


@pytest.fixture(scope="session")
def connect() -> Iterator[Callable[[ServerProcess], grpc.Channel]]:
    """Open a ready channel to a server; every channel is closed at the end of the session."""
    channels: list[grpc.Channel] = []

    def open_channel(server: ServerProcess) -> grpc.Channel:
        channel = grpc.insecure_channel(server.grpc_address)
        grpc.channel_ready_future(channel).result(timeout=30)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        channel.close()


@pytest.fixture(scope="session")
def default_client(default_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(default_server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="session")
def default_stub(
    default_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> Stub:
    return Stub(connect(default_server))


# --- requests and responses -----------------------------------------------------------------


def _request(
    model: str, version: str, request_id: str, outputs: Sequence[str]
) -> service_pb2.ModelInferRequest:
    request = Request(model_name=model, model_version=version, id=request_id)
    for name in outputs:
        request.outputs.add(name=name)
    return request


def _typed_request(
    model: str,
    inputs: dict[str, np.ndarray],
    version: str = "",
    request_id: str = "",
    outputs: Sequence[str] = (),
) -> service_pb2.ModelInferRequest:
    """A request carrying every input in typed `contents`."""
    request = _request(model, version, request_id, outputs)
    for name, array in inputs.items():
        datatype = np_to_triton_dtype(array.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.ravel().tolist())
    return request


def _raw_request(
    model: str,
    inputs: dict[str, np.ndarray],
    version: str = "",
    request_id: str = "",
    outputs: Sequence[str] = (),
) -> service_pb2.ModelInferRequest:
    """A request carrying every input in `raw_input_contents`, as tritonclient sends it."""
    request = _request(model, version, request_id, outputs)
    for name, array in inputs.items():
        datatype = np_to_triton_dtype(array.dtype)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            serialized = serialize_byte_tensor(array)
            request.raw_input_contents.append(serialized.item() if serialized.size else b"")
        else:
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def _decode(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of a response as numpy, whether it came raw or typed."""
    arrays = {}
    result = triton.InferResult(response)
    for index, output in enumerate(response.outputs):
        if index < len(response.raw_output_contents):
            arrays[output.name] = result.as_numpy(output.name)
            continue
        values = list(getattr(output.contents, TYPED_FIELDS[output.datatype]))
        dtype = object if output.datatype == "BYTES" else triton_to_np_dtype(output.datatype)
        array = np.empty(len(values), dtype=dtype)
        array[:] = values
        arrays[output.name] = array.reshape(tuple(output.shape))
    return arrays


def _rpc_error(call: Callable[[], object], code: grpc.StatusCode) -> str:
    """Run a stub call that must fail with `code`; return the status message."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    error = info.value
    assert error.code() == code, error.details()  # type: ignore[attr-defined]
    return str(error.details())  # type: ignore[attr-defined]


# --- repositories ---------------------------------------------------------------------------


def _onnx_model(
    nodes: list[NodeProto], inputs: list[ValueInfoProto], outputs: list[ValueInfoProto]
) -> bytes:
    """Serialize a one-graph model in a format ONNX Runtime accepts: IR 9, opset 17 (onnx
    1.23 writes IR 14 by default, which ONNX Runtime refuses)."""
    graph = helper.make_graph(nodes, "model", inputs, outputs)
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


def _add_constant_model(constant: float) -> bytes:
    """y = x + constant, FP32 [batch, 2]: versions built with different constants are
    told apart by their answers."""
    return _onnx_model(
        [
            helper.make_node(
                "Constant",
                [],
                ["c"],
                value=helper.make_tensor("c", TensorProto.FLOAT, [], [constant]),
            ),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
    )


def _write_model(root: Path, name: str, versions: dict[int, bytes], config: str) -> Path:
    """Write `root/name/config.yaml` and `root/name/<version>/model.onnx`."""
    model_dir = root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(config)
    for version, data in versions.items():
        (model_dir / str(version)).mkdir(exist_ok=True)
        (model_dir / str(version) / "model.onnx").write_bytes(data)
    return model_dir


# --- helpers as fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session", name="typed_request")
def typed_request_fixture() -> Callable[..., service_pb2.ModelInferRequest]:
    return _typed_request


@pytest.fixture(scope="session", name="raw_request")
def raw_request_fixture() -> Callable[..., service_pb2.ModelInferRequest]:
    return _raw_request


@pytest.fixture(scope="session", name="decode")
def decode_fixture() -> Callable[[service_pb2.ModelInferResponse], dict[str, np.ndarray]]:
    return _decode


@pytest.fixture(scope="session", name="rpc_error")
def rpc_error_fixture() -> Callable[[Callable[[], object], grpc.StatusCode], str]:
    return _rpc_error


@pytest.fixture(scope="session", name="onnx_model")
def onnx_model_fixture() -> Callable[..., bytes]:
    return _onnx_model


@pytest.fixture(scope="session", name="add_constant_model")
def add_constant_model_fixture() -> Callable[[float], bytes]:
    return _add_constant_model


@pytest.fixture(scope="session", name="write_model")
def write_model_fixture() -> Callable[[Path, str, dict[int, bytes], str], Path]:
    return _write_model
