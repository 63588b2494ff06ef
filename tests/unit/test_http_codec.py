"""The V2 REST codec: JSON `data` and binary tensor data -> domain requests, domain
responses -> V2 JSON and binary replies, and the refusals in between."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from server.api.http import binary
from server.api.http.codec import OutputForm, decode_request, encode_response, parse_object
from server.core import datatypes
from server.core.errors import InvalidRequest
from server.core.inference import InferenceResponse
from server.core.tensors import Tensor

MAX_ELEMENTS = 1 << 20


def _decode(request: Any, data: bytes = b"", model: str = "m", version: str = "") -> Any:
    header = orjson.dumps(request)
    length = str(len(header)) if data else None
    return decode_request(model, version, header + data, length, MAX_ELEMENTS)


def _input(name: str, datatype: str, shape: list[int], **fields: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, **fields}


def _refused(request: Any, data: bytes = b"", **kwargs: Any) -> str:
    with pytest.raises(InvalidRequest) as info:
        _decode(request, data, **kwargs)
    return info.value.message


# --- JSON data ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [[1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]], [[[1], [2], [3]], [[4], [5], [6]]]]
)
def test_data_flat_or_nested_in_row_major_order(data: list[Any]) -> None:
    request, _ = _decode({"inputs": [_input("x", "FP32", [2, 3], data=data)]})
    (tensor,) = request.inputs
    assert tensor.datatype is datatypes.BY_NAME["FP32"]
    assert tensor.data.dtype == np.float32
    np.testing.assert_array_equal(tensor.data, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("BOOL", [True, False], np.array([True, False])),
        ("INT8", [-128, 127], np.array([-128, 127], np.int8)),
        ("UINT64", [0, 2**64 - 1], np.array([0, 2**64 - 1], np.uint64)),
        ("INT64", [-(2**63), 5], np.array([-(2**63), 5], np.int64)),
        ("FP16", [0.5, 2], np.array([0.5, 2], np.float16)),
        ("FP64", [0.1, 3], np.array([0.1, 3], np.float64)),
        ("BYTES", ["é", ""], np.array(["é".encode(), b""], dtype=object)),
    ],
)
def test_each_datatype_from_json(datatype: str, data: list[Any], expected: np.ndarray) -> None:
    request, _ = _decode({"inputs": [_input("x", datatype, [2], data=data)]})
    array = request.inputs[0].data
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array, expected)


def test_nested_bytes_keep_their_order() -> None:
    request, _ = _decode({"inputs": [_input("x", "BYTES", [2, 2], data=[["a", "b"], ["c", "d"]])]})
    assert request.inputs[0].data.tolist() == [[b"a", b"b"], [b"c", b"d"]]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5, 2], "input 'x': INT32 data must hold integers"),
        ("UINT64", [-1, 2**64 - 1], "input 'x': a value is outside the range of UINT64"),
        ("INT64", [1, 2**63], "input 'x': a value is outside the range of INT64"),
        ("UINT8", [300, 1], "input 'x': a value is outside the range of UINT8"),
        ("INT8", [-129, 1], "input 'x': a value is outside the range of INT8"),
        ("BOOL", [1, 0], "input 'x': BOOL data must hold booleans"),
        ("FP32", ["1", "2"], "input 'x': FP32 data must hold numbers"),
        ("FP32", [1, None], "input 'x': FP32 data must hold numbers"),
        ("BYTES", ["a", 1], "input 'x': BYTES data must hold strings"),
        ("FP32", [1, 2, 3], "input 'x': data has 3 elements but shape [2] needs 2"),
        ("FP32", [[1, 2], [3]], "input 'x': data must be a rectangular array"),
        ("FP32", {"a": 1}, "input 'x': data must be a JSON array, not dict"),
    ],
)
def test_json_data_is_never_cast_silently(datatype: str, data: Any, message: str) -> None:
    assert _refused({"inputs": [_input("x", datatype, [2], data=data)]}).startswith(message)


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([1], "the inference request must be a JSON object, not an array"),
        ({"inputs": {}}, "inputs must be a JSON array, not an object"),
        ({}, "inputs must be a JSON array, not null"),
        ({"inputs": [1]}, "inputs[0] must be a JSON object, not a number"),
        ({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}, "inputs[0].name"),
        ({"inputs": [_input("x", "FP99", [1], data=[1])]}, "input 'x': datatype 'FP99'"),
        ({"inputs": [_input("x", "FP32", [-1], data=[1])]}, "input 'x': shape must be"),
        ({"inputs": [_input("x", "FP32", [True], data=[1])]}, "input 'x': shape must be"),
        ({"inputs": [_input("x", "FP32", [1])]}, "input 'x': neither data nor parameters"),
        ({"id": 7, "inputs": []}, "id must be a string, not a number"),
        ({"parameters": [], "inputs": []}, "parameters must be a JSON object"),
        ({"parameters": {"p": {}}, "inputs": []}, "parameters: 'p' must be a boolean"),
        ({"outputs": [{}], "inputs": []}, "outputs[0] must be an object with a string name"),
    ],
)
def test_malformed_requests(request_body: Any, message: str) -> None:
    assert _refused(request_body).startswith(message)


def test_invalid_json() -> None:
    with pytest.raises(InvalidRequest, match="the inference request is not valid JSON"):
        decode_request("m", "", b"{nope", None, MAX_ELEMENTS)


def test_an_empty_object_body_is_an_empty_object() -> None:
    assert parse_object(b"", "the body") == {}


# --- the path decides -----------------------------------------------------------------------


def test_a_body_naming_another_model_is_refused() -> None:
    message = _refused({"model_name": "other", "inputs": []}, model="m")
    assert message.startswith("the body's model_name 'other' differs from the path's 'm'")


def test_a_body_naming_another_version_is_refused() -> None:
    message = _refused({"model_version": "2", "inputs": []}, version="1")
    assert message.startswith("the body's model_version '2' differs from the path's '1'")


def test_a_body_naming_the_path_model_is_accepted() -> None:
    request, _ = _decode({"model_name": "m", "model_version": "1", "inputs": []}, version="1")
    assert (request.model_name, request.model_version) == ("m", "1")


# --- parameters and requested outputs -------------------------------------------------------


def test_parameters_pass_through_without_the_transport_ones() -> None:
    request, form = _decode(
        {
            "id": "r1",
            "parameters": {"binary_data_output": True, "priority": 2, "tag": "a"},
            "inputs": [_input("x", "FP32", [1], data=[1], parameters={"p": 1})],
            "outputs": [
                {"name": "y", "parameters": {"binary_data": False, "classification": 0}},
                {"name": "z"},
            ],
        }
    )
    assert request.id == "r1"
    assert request.parameters == {"priority": 2, "tag": "a"}
    assert request.requested_outputs == ["y", "z"]
    assert request.output_parameters == {"y": {"classification": 0}}
    assert (form.is_binary("y"), form.is_binary("z")) == (False, True)


def test_outputs_are_json_unless_asked_for_binary() -> None:
    _, form = _decode(
        {"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    )
    assert (form.is_binary("y"), form.is_binary("other")) == (True, False)


# --- binary data ----------------------------------------------------------------------------


def _binary_input(name: str, datatype: str, shape: list[int], size: int) -> dict[str, Any]:
    return _input(name, datatype, shape, parameters={"binary_data_size": size})


def test_binary_inputs_are_views_of_the_body() -> None:
    a = np.arange(6, dtype=np.float32)
    b = np.array([7, -8], dtype=np.int64)
    request, _ = _decode(
        {"inputs": [_binary_input("a", "FP32", [2, 3], 24), _binary_input("b", "INT64", [2], 16)]},
        a.tobytes() + b.tobytes(),
    )
    first, second = (t.data for t in request.inputs)
    np.testing.assert_array_equal(first, a.reshape(2, 3))
    np.testing.assert_array_equal(second, b)
    assert not first.flags.owndata and not first.flags.writeable  # np.frombuffer, no copy


def test_binary_and_json_inputs_mix() -> None:
    request, _ = _decode(
        {"inputs": [_input("j", "INT32", [1], data=[5]), _binary_input("b", "FP64", [1], 8)]},
        struct.pack("<d", 2.5),
    )
    assert [t.data.tolist() for t in request.inputs] == [[5], [2.5]]


def test_binary_bytes_are_length_prefixed() -> None:
    data = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 0)
    request, _ = _decode({"inputs": [_binary_input("s", "BYTES", [2], len(data))]}, data)
    assert request.inputs[0].data.tolist() == [b"hi", b""]


@pytest.mark.parametrize(
    ("size", "data", "message"),
    [
        (8, b"\0" * 4, "input 'a': binary_data_size 8 runs past the end of the binary data"),
        (8, b"\0" * 12, "the body holds 12 bytes of binary data but the inputs' binary_data_size"),
        (4, b"\0" * 4, "input 'a': binary_data_size is 4 but shape [2] of FP32 needs 8 bytes"),
    ],
    ids=["shorter", "longer", "wrong-size"],
)
def test_binary_data_must_match_what_the_inputs_declare(
    size: int, data: bytes, message: str
) -> None:
    assert _refused({"inputs": [_binary_input("a", "FP32", [2], size)]}, data).startswith(message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<I", 5) + b"abc", "input 's': a BYTES element runs past"),
        (b"\1\0", "input 's': binary data ends inside a BYTES length prefix"),
        (struct.pack("<I", 0) * 3, "input 's': binary data holds more than the 2 BYTES"),
        (struct.pack("<I", 0), "input 's': binary data holds 1 BYTES elements but shape"),
    ],
)
def test_malformed_binary_bytes(data: bytes, message: str) -> None:
    request = {"inputs": [_binary_input("s", "BYTES", [2], len(data))]}
    assert _refused(request, data).startswith(message)


def test_binary_data_size_needs_the_header_length() -> None:
    header = orjson.dumps({"inputs": [_binary_input("a", "FP32", [1], 4)]})
    with pytest.raises(InvalidRequest, match="binary_data_size needs the Inference-Header"):
        decode_request("m", "", header, None, MAX_ELEMENTS)


@pytest.mark.parametrize("length", ["x", "-1", "999"])
def test_a_header_length_outside_the_body_is_refused(length: str) -> None:
    with pytest.raises(InvalidRequest, match="Inference-Header-Content-Length"):
        binary.split(b"{}", length)


def test_both_data_and_binary_data_size_are_refused() -> None:
    request = {"inputs": [_input("a", "FP32", [1], data=[1], parameters={"binary_data_size": 4})]}
    assert _refused(request, b"\0" * 4).startswith("input 'a': both data and parameters")


def test_element_limit() -> None:
    header = orjson.dumps({"inputs": [_input("a", "FP32", [10, 10], data=[0] * 100)]})
    with pytest.raises(InvalidRequest, match="100 elements exceed the limit of 99"):
        decode_request("m", "", header, None, 99)


# --- replies --------------------------------------------------------------------------------


def _response(*tensors: Tensor, request_id: str = "") -> InferenceResponse:
    return InferenceResponse("m", "3", request_id, list(tensors))


FLOATS = Tensor("f", datatypes.BY_NAME["FP32"], np.array([[0.1, 1 / 3]], np.float32))
INTS = Tensor("i", datatypes.BY_NAME["INT64"], np.array([2**40], np.int64))
TEXTS = Tensor("t", datatypes.BY_NAME["BYTES"], np.array([b"ab", "c"], dtype=object))


def test_json_reply() -> None:
    body, length = encode_response(_response(FLOATS, INTS, TEXTS, request_id="r"), OutputForm())
    assert length is None
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "r",
        "outputs": [
            {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [0.1, 0.33333334]},
            {"name": "i", "datatype": "INT64", "shape": [1], "data": [2**40]},
            {"name": "t", "datatype": "BYTES", "shape": [2], "data": ["ab", "c"]},
        ],
    }


def test_binary_reply_follows_its_json_header() -> None:
    body, length = encode_response(
        _response(FLOATS, INTS, TEXTS), OutputForm(default_binary=True, binary={"i": False})
    )
    assert length is not None
    header = orjson.loads(body[:length])
    assert "id" not in header
    f, i, t = header["outputs"]
    assert f["parameters"] == {"binary_data_size": 8} and "data" not in f
    assert i["data"] == [2**40]
    assert t["parameters"] == {"binary_data_size": 4 + 2 + 4 + 1}
    assert body[length:] == FLOATS.data.tobytes() + b"\2\0\0\0ab\1\0\0\0c"


def test_bytes_that_are_not_text_need_binary() -> None:
    raw = Tensor("t", datatypes.BY_NAME["BYTES"], np.array([b"\xff"], dtype=object))
    with pytest.raises(InvalidRequest, match=r"request it with parameters\.binary_data"):
        encode_response(_response(raw), OutputForm())
    body, length = encode_response(_response(raw), OutputForm(default_binary=True))
    assert length is not None and body[length:] == b"\1\0\0\0\xff"


# --- the limits every face shares (server.core.limits) ---------------------------------------


def _limited(request: Any, data: bytes = b"", **limits: int) -> str:
    header = orjson.dumps(request)
    length = str(len(header)) if data else None
    with pytest.raises(InvalidRequest) as refused:
        decode_request("m", "", header + data, length, MAX_ELEMENTS, **limits)
    return refused.value.message


def test_rows_beyond_max_batch_rows_are_refused_before_decoding() -> None:
    request = {"inputs": [_input("a", "FP32", [9, 1], data=[0.0] * 9)]}
    assert _limited(request, max_rows=8) == (
        "input 'a': 9 rows exceed the limit of 8 (--max-batch-rows)"
    )


def test_a_json_bytes_element_beyond_max_element_bytes_is_refused() -> None:
    request = {"inputs": [_input("s", "BYTES", [2], data=["ok", "x" * 17])]}
    assert _limited(request, max_element_bytes=16) == (
        "input 's': a BYTES element of 17 bytes exceeds the limit of 16 (--max-element-bytes)"
    )


def test_a_binary_bytes_element_beyond_max_element_bytes_is_refused() -> None:
    data = struct.pack("<I", 17) + b"x" * 17
    request = {"inputs": [_binary_input("s", "BYTES", [1], len(data))]}
    assert _limited(request, data, max_element_bytes=16) == (
        "input 's': a BYTES element of 17 bytes exceeds the limit of 16 (--max-element-bytes)"
    )
