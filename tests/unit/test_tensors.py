"""The gRPC codec, protobuf <-> domain: raw and typed round trips, BYTES framing, and the
exact error messages. BYTES elements stay bytes here; only a consumer that needs text
decodes them (test_server_inproc covers the ONNX string input)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from inference import grpc_service_pb2 as pb
from server.api.grpc.codec import CONTENTS_FIELD, decode_request, encode_response
from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.inference import InferenceRequest, InferenceResponse
from server.core.tensors import Tensor

LIMIT = 1_000_000

TYPED_VALUES: dict[str, list[Any]] = {
    "BOOL": [True, False, True],
    "UINT8": [0, 7, 255],
    "UINT16": [0, 7, 65535],
    "UINT32": [0, 7, 2**32 - 1],
    "UINT64": [0, 7, 2**64 - 1],
    "INT8": [-128, 0, 127],
    "INT16": [-(2**15), 0, 2**15 - 1],
    "INT32": [-(2**31), 0, 2**31 - 1],
    "INT64": [-(2**63), 0, 2**63 - 1],
    "FP32": [-1.5, 0.0, 3.25],
    "FP64": [-1.5, 0.0, 1e300],
    "BYTES": [b"a", b"", "\u00e9t\u00e9".encode()],
}
FIXED_SIZE = [t.name for t in datatypes.ALL if t.itemsize]


def _length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _raw_request(datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", model_version="2", id="r1")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


def _typed_request(datatype: str, shape: list[int], values: list[Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="r1")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=shape)
    field = CONTENTS_FIELD.get(datatype)
    if field is not None:
        getattr(tensor.contents, field).extend(values)
    return request


def _decode_error(request: pb.ModelInferRequest, limit: int = LIMIT, tensor: str = "x") -> str:
    """The message of the InvalidRequest that decoding raises, which names `tensor`."""
    with pytest.raises(InvalidRequest) as failure:
        decode_request(request, limit)
    assert failure.value.tensor == tensor
    return str(failure.value)


def _response(*tensors: Tensor, raw: bool) -> pb.ModelInferResponse:
    return encode_response(InferenceResponse("m", "2", "r1", list(tensors)), raw)


def _bytes_tensor(*items: object) -> Tensor:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return Tensor("y", datatypes.BY_NAME["BYTES"], array)


def test_every_datatype_but_fp16_has_a_typed_contents_field() -> None:
    assert set(datatypes.BY_NAME) - set(CONTENTS_FIELD) == {"FP16"}
    assert set(CONTENTS_FIELD) <= set(datatypes.BY_NAME)
    assert set(CONTENTS_FIELD.values()) <= set(pb.InferTensorContents.DESCRIPTOR.fields_by_name)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXED_SIZE)
def test_raw_round_trip(name: str) -> None:
    datatype = datatypes.BY_NAME[name]
    array = (np.arange(6) % 2 == 0 if name == "BOOL" else np.arange(6)).astype(datatype.numpy)
    array = array.reshape(2, 3)
    request = _raw_request(name, [2, 3], array.tobytes())
    request.outputs.add(name="y")

    decoded = decode_request(request, LIMIT)
    assert (decoded.model_name, decoded.model_version, decoded.id) == ("m", "2", "r1")
    assert decoded.requested_outputs == ["y"]
    [tensor] = decoded.inputs
    assert (tensor.name, tensor.datatype) == ("x", datatype)
    assert tensor.data.dtype == datatype.numpy
    np.testing.assert_array_equal(tensor.data, array)
    assert not tensor.data.flags.owndata  # np.frombuffer over the request bytes: no copy

    response = _response(Tensor("y", datatype, tensor.data), raw=True)
    [output] = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("y", name, [2, 3])
    assert not output.HasField("contents")
    assert list(response.raw_output_contents) == [array.tobytes()]
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "r1")


@pytest.mark.parametrize("name", list(TYPED_VALUES))
def test_typed_round_trip(name: str) -> None:
    datatype = datatypes.BY_NAME[name]
    values = TYPED_VALUES[name]
    decoded = decode_request(_typed_request(name, [1, 3], values), LIMIT)
    assert decoded.requested_outputs == []
    [tensor] = decoded.inputs
    assert tensor.data.shape == (1, 3)
    if name == "BYTES":
        assert tensor.data.dtype == object
        assert tensor.data.ravel().tolist() == values  # bytes stay bytes
    else:
        assert tensor.data.dtype == datatype.numpy
        assert tensor.data.ravel().tolist() == values

    response = _response(Tensor("y", datatype, tensor.data), raw=False)
    assert not response.raw_output_contents
    [output] = response.outputs
    assert (output.datatype, list(output.shape)) == (name, [1, 3])
    assert list(getattr(output.contents, CONTENTS_FIELD[name])) == values


def test_raw_bytes_round_trip() -> None:
    raw = _length_prefixed(b"hello", b"", "\u00fcber".encode())
    decoded = decode_request(_raw_request("BYTES", [3], raw), LIMIT)
    [tensor] = decoded.inputs
    assert tensor.data.tolist() == [b"hello", b"", "\u00fcber".encode()]
    response = _response(Tensor("y", datatypes.BY_NAME["BYTES"], tensor.data), raw=True)
    assert list(response.raw_output_contents) == [raw]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_bytes_that_are_not_utf8_decode_and_encode_unchanged(raw: bool) -> None:
    items = [b"\xff\xfe", b"\x00", b"ok"]
    if raw:
        request = _raw_request("BYTES", [3], _length_prefixed(*items))
    else:
        request = _typed_request("BYTES", [3], items)
    [tensor] = decode_request(request, LIMIT).inputs
    assert tensor.data.tolist() == items
    response = _response(Tensor("y", datatypes.BY_NAME["BYTES"], tensor.data), raw=raw)
    if raw:
        assert list(response.raw_output_contents) == [_length_prefixed(*items)]
    else:
        assert list(response.outputs[0].contents.bytes_contents) == items


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_text_from_the_runtime_is_encoded_as_utf8(raw: bool) -> None:
    # ONNX Runtime hands string outputs back as str.
    response = _response(_bytes_tensor("\u00e9t\u00e9", "", b"as is"), raw=raw)
    expected = ["\u00e9t\u00e9".encode(), b"", b"as is"]
    if raw:
        assert list(response.raw_output_contents) == [_length_prefixed(*expected)]
    else:
        assert list(response.outputs[0].contents.bytes_contents) == expected


def test_a_row_view_encodes_only_its_rows() -> None:
    batch = np.arange(12, dtype=np.float32).reshape(4, 3)
    view = batch[1:3]
    response = _response(Tensor("y", datatypes.BY_NAME["FP32"], view), raw=True)
    assert list(response.outputs[0].shape) == [2, 3]
    assert list(response.raw_output_contents) == [view.tobytes()]
    np.testing.assert_array_equal(
        np.frombuffer(response.raw_output_contents[0], dtype=np.float32), np.arange(3, 9)
    )


def test_an_fp16_output_makes_a_typed_response_raw_throughout() -> None:
    fp32 = np.array([[1.5, 2.5]], dtype=np.float32)
    fp16 = np.array([[0.5, -2.0]], dtype=np.float16)
    response = _response(
        Tensor("a", datatypes.BY_NAME["FP32"], fp32),
        Tensor("h", datatypes.BY_NAME["FP16"], fp16),
        raw=False,
    )
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
        ("a", "FP32", [1, 2]),
        ("h", "FP16", [1, 2]),
    ]
    assert all(not output.HasField("contents") for output in response.outputs)
    assert list(response.raw_output_contents) == [fp32.tobytes(), fp16.tobytes()]


def test_a_request_of_several_raw_inputs_keeps_their_order() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="a", datatype="INT32", shape=[2])
    request.inputs.add(name="b", datatype="FP64", shape=[1])
    request.raw_input_contents.extend(
        [np.array([1, 2], np.int32).tobytes(), np.array([0.25]).tobytes()]
    )
    decoded = decode_request(request, LIMIT)
    assert [(t.name, t.data.tolist()) for t in decoded.inputs] == [("a", [1, 2]), ("b", [0.25])]


# --- errors ----------------------------------------------------------------------------------


def test_raw_entries_must_match_the_inputs() -> None:
    request = _raw_request("FP32", [1], np.zeros(1, np.float32).tobytes())
    request.inputs.add(name="z", datatype="FP32", shape=[1])
    assert _decode_error(request, tensor="") == (
        "raw_input_contents has 1 entries but the request has 2 inputs; expected one entry "
        "per input, in input order"
    )


def test_an_unknown_datatype_is_named() -> None:
    assert _decode_error(_raw_request("FLOAT32", [1], b"\0" * 4)) == (
        "input 'x': datatype 'FLOAT32' is not one of BOOL, UINT8, UINT16, UINT32, UINT64, "
        "INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
    )


def test_a_negative_dimension_is_refused() -> None:
    assert _decode_error(_raw_request("FP32", [-1, 2], b"")) == (
        "input 'x': shape [-1, 2] has a negative dimension"
    )


def test_the_element_limit_is_enforced() -> None:
    assert _decode_error(_raw_request("UINT8", [10, 10], b"\0" * 100), limit=99) == (
        "input 'x': 100 elements exceed the limit of 99"
    )
    assert decode_request(_raw_request("UINT8", [10, 10], b"\0" * 100), 100).inputs


def test_raw_and_typed_contents_do_not_mix() -> None:
    request = _raw_request("FP32", [1], b"\0" * 4)
    request.inputs[0].contents.fp32_contents.append(1.0)
    assert _decode_error(request) == (
        "input 'x': sets contents although the request uses raw_input_contents; use one or "
        "the other"
    )


def test_raw_length_must_fit_the_shape() -> None:
    assert _decode_error(_raw_request("FP32", [2, 2], b"\0" * 12)) == (
        "input 'x': raw content has 12 bytes but shape [2, 2] of FP32 needs 16"
    )


def test_raw_bytes_ending_inside_a_length_prefix() -> None:
    raw = _length_prefixed(b"ok") + b"\x03\x00"
    assert _decode_error(_raw_request("BYTES", [2], raw)) == (
        "input 'x': raw content ends inside a BYTES length prefix"
    )


def test_raw_bytes_element_running_past_the_end() -> None:
    raw = struct.pack("<I", 5) + b"ab"
    assert _decode_error(_raw_request("BYTES", [1], raw)) == (
        "input 'x': a BYTES element runs past the end of the raw content"
    )


@pytest.mark.parametrize(("items", "shape"), [((b"a",), [2, 1]), ((), [1])])
def test_raw_bytes_with_too_few_elements_for_the_shape(
    items: tuple[bytes, ...], shape: list[int]
) -> None:
    needs = int(np.prod(shape))
    assert _decode_error(_raw_request("BYTES", shape, _length_prefixed(*items))) == (
        f"input 'x': raw content holds {len(items)} BYTES elements but shape {shape} needs {needs}"
    )


@pytest.mark.parametrize(
    ("items", "shape"),
    [
        pytest.param((b"a", b"b"), [1], id="one too many"),
        pytest.param((b"a",), [0], id="any for an empty shape"),
        pytest.param((b"",) * 100_000, [1], id="a flood of zero-length elements"),
    ],
)
def test_raw_bytes_with_more_elements_than_the_shape_stop_at_the_first_extra(
    items: tuple[bytes, ...], shape: list[int]
) -> None:
    # The parser stops at the count the shape declares, so a flood of 4-byte zero-length
    # prefixes under a one-element shape costs one element's work, not 100,000.
    needs = int(np.prod(shape))
    assert _decode_error(_raw_request("BYTES", shape, _length_prefixed(*items))) == (
        f"input 'x': raw content holds more than the {needs} BYTES elements that shape "
        f"{shape} declares"
    )


def test_an_empty_bytes_tensor_decodes_from_empty_raw_content() -> None:
    [tensor] = decode_request(_raw_request("BYTES", [0, 2], b""), LIMIT).inputs
    assert tensor.data.shape == (0, 2)
    assert tensor.data.dtype == object


def test_fp16_must_be_raw() -> None:
    assert _decode_error(_typed_request("FP16", [1], [])) == (
        "input 'x': FP16 data must be sent in raw_input_contents"
    )


def test_typed_element_count_must_fit_the_shape() -> None:
    assert _decode_error(_typed_request("FP32", [2, 2], [1.0, 2.0, 3.0])) == (
        "input 'x': contents.fp32_contents has 3 elements but shape [2, 2] needs 4"
    )


@pytest.mark.parametrize(
    ("datatype", "value", "field"),
    [
        ("UINT8", 256, "uint_contents"),
        ("INT8", -129, "int_contents"),
        ("INT16", 40000, "int_contents"),
    ],
)
def test_typed_values_must_fit_the_datatype(datatype: str, value: int, field: str) -> None:
    assert _decode_error(_typed_request(datatype, [1], [value])) == (
        f"input 'x': a value in contents.{field} does not fit {datatype}"
    )


def test_a_request_is_decoded_to_plain_dataclasses() -> None:
    decoded = decode_request(_typed_request("INT64", [2], [4, 5]), LIMIT)
    assert isinstance(decoded, InferenceRequest)
    assert not hasattr(decoded, "__dict__")  # slotted: no per-request dict on the hot path
