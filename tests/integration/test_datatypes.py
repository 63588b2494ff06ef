"""Every V2 datatype makes a round trip through an Identity model, raw and typed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from onnx import NodeProto, TensorProto, ValueInfoProto, helper
from processes import ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc

Stub: TypeAlias = service_pb2_grpc.GRPCInferenceServiceStub
MakeRequest: TypeAlias = Callable[..., service_pb2.ModelInferRequest]
Decode: TypeAlias = Callable[[service_pb2.ModelInferResponse], dict[str, np.ndarray]]
RpcError: TypeAlias = Callable[[Callable[[], object], grpc.StatusCode], str]

ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}
TYPED = [name for name in ONNX_TYPES if name != "FP16"]
CONFIG = "max_batch_size: 8\n"


def sample(datatype: str) -> np.ndarray:
    """A [2, 3] tensor holding the type's extremes."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BYTES":
        items = [b"", b"hello", "\u00fcn\u00efc\u00f8de".encode(), b"x" * 1000, b"a b", b"\t"]
        array = np.empty(6, dtype=object)
        array[:] = items
        return array.reshape(2, 3)
    dtype = triton.triton_to_np_dtype(datatype)
    if datatype.startswith("FP"):
        floats = np.finfo(dtype)
        values = [floats.min, floats.max, -0.0, np.inf, np.nan, floats.tiny]
    else:
        ints = np.iinfo(dtype)
        values = [ints.min, ints.max, 0, 1, ints.max // 3, ints.min // 2]
    return np.array(values, dtype=dtype).reshape(2, 3)


Graph: TypeAlias = tuple[list[NodeProto], list[ValueInfoProto], list[ValueInfoProto]]


def identity_graph(datatype: str) -> Graph:
    elem = ONNX_TYPES[datatype]
    return (
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        [helper.make_tensor_value_info("INPUT0", elem, ["batch", 3])],
        [helper.make_tensor_value_info("OUTPUT0", elem, ["batch", 3])],
    )


def half_graph() -> Graph:
    """FP32 in; FP16 and FP32 out: a typed request gets an FP16 output, which has no typed
    field."""
    return (
        [
            helper.make_node("Cast", ["INPUT0"], ["HALF"], to=TensorProto.FLOAT16),
            helper.make_node("Identity", ["INPUT0"], ["SAME"]),
        ],
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("HALF", TensorProto.FLOAT16, ["batch", 3]),
            helper.make_tensor_value_info("SAME", TensorProto.FLOAT, ["batch", 3]),
        ],
    )


@pytest.fixture(scope="module")
def identity_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
    onnx_model: Callable[..., bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("datatypes")
    for datatype in ONNX_TYPES:
        model = onnx_model(*identity_graph(datatype))
        write_model(root, f"identity_{datatype.lower()}", {1: model}, CONFIG)
    write_model(root, "half", {1: onnx_model(*half_graph())}, CONFIG)
    with start_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def client(identity_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(identity_server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(identity_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]) -> Stub:
    return Stub(connect(identity_server))


def assert_same(actual: np.ndarray, want: np.ndarray) -> None:
    assert actual.shape == want.shape
    if want.dtype == object:
        assert actual.tolist() == want.tolist()
    else:
        assert actual.dtype == want.dtype
        assert actual.tobytes() == want.tobytes()  # bit for bit: -0.0, NaN, extremes


@pytest.mark.parametrize("datatype", list(ONNX_TYPES))
def test_metadata_reports_the_datatype(client: triton.InferenceServerClient, datatype: str) -> None:
    metadata = client.get_model_metadata(f"identity_{datatype.lower()}")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", datatype, [-1, 3])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("OUTPUT0", datatype, [-1, 3])
    ]


@pytest.mark.parametrize("datatype", list(ONNX_TYPES))
def test_raw_round_trip(client: triton.InferenceServerClient, datatype: str) -> None:
    data = sample(datatype)
    tensor = triton.InferInput("INPUT0", list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{datatype.lower()}", [tensor])
    response = result.get_response()
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", datatype, [2, 3])
    ]
    assert len(response.raw_output_contents) == 1
    assert_same(result.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("datatype", TYPED)
def test_typed_round_trip(
    stub: Stub, typed_request: MakeRequest, decode: Decode, datatype: str
) -> None:
    data = sample(datatype)
    request = typed_request(f"identity_{datatype.lower()}", {"INPUT0": data})
    assert request.inputs[0].datatype == datatype
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", datatype, [2, 3])
    ]
    assert_same(decode(response)["OUTPUT0"], data)


def test_fp16_has_no_typed_contents(
    stub: Stub, typed_request: MakeRequest, rpc_error: RpcError
) -> None:
    request = typed_request("identity_fp32", {"INPUT0": sample("FP32")})
    request.model_name = "identity_fp16"
    request.inputs[0].datatype = "FP16"
    message = rpc_error(lambda: stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "input 'INPUT0'" in message
    assert "FP16 data must be sent in raw_input_contents" in message


def test_fp16_output_of_a_typed_request_is_raw(
    stub: Stub, typed_request: MakeRequest, decode: Decode
) -> None:
    data = np.array([[0.5, -1.25, 65504.0], [1e-3, 3.0, -7.0]], np.float32)
    response = stub.ModelInfer(typed_request("half", {"INPUT0": data}))
    assert [(o.name, o.datatype) for o in response.outputs] == [("HALF", "FP16"), ("SAME", "FP32")]
    assert len(response.raw_output_contents) == 2
    assert not response.outputs[1].contents.fp32_contents
    outputs = decode(response)
    assert_same(outputs["HALF"], data.astype(np.float16))
    assert_same(outputs["SAME"], data)


def test_full_batch_round_trip(client: triton.InferenceServerClient) -> None:
    data = np.arange(24, dtype=np.int32).reshape(8, 3)
    tensor = triton.InferInput("INPUT0", [8, 3], "INT32")
    tensor.set_data_from_numpy(data)
    assert_same(client.infer("identity_int32", [tensor]).as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [
        ("INT8", "int_contents", 128),
        ("UINT8", "uint_contents", 256),
        ("INT16", "int_contents", -40000),
    ],
)
def test_typed_value_out_of_range(
    stub: Stub, rpc_error: RpcError, datatype: str, field: str, value: int
) -> None:
    request = service_pb2.ModelInferRequest(model_name=f"identity_{datatype.lower()}")
    tensor = request.inputs.add(name="INPUT0", datatype=datatype, shape=[1, 3])
    getattr(tensor.contents, field).extend([0, 1, value])
    message = rpc_error(lambda: stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message == f"input 'INPUT0': a value in contents.{field} does not fit {datatype}"


def test_typed_bytes_must_be_utf8_for_a_string_tensor(stub: Stub, rpc_error: RpcError) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_bytes")
    tensor = request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 3])
    tensor.contents.bytes_contents.extend([b"ok", b"\xff\xfe", b""])
    message = rpc_error(lambda: stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert "input 'INPUT0'" in message
    assert "UTF-8" in message


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"\x02\x00\x00\x00ok\x05\x00", "ends inside a BYTES length prefix"),
        (b"\x02\x00\x00\x00ok\x09\x00\x00\x00abc", "runs past the end of the raw content"),
        (b"\x02\x00\x00\x00ok", "holds 1 BYTES elements but shape [1, 3] needs 3"),
    ],
)
def test_malformed_raw_bytes(stub: Stub, rpc_error: RpcError, raw: bytes, fragment: str) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity_bytes", raw_input_contents=[raw])
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, 3])
    message = rpc_error(lambda: stub.ModelInfer(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message.startswith("input 'INPUT0': ")
    assert "raw content" in message  # the field the client sent
    assert fragment in message
