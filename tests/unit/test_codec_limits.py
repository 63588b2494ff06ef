"""The codec's hard limits, just under and just over: rows per input and the length of a
BYTES element, raw and typed, refused before anything is allocated for them."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from inference import grpc_service_pb2 as pb
from server.api.grpc import codec
from server.api.grpc.codec import decode_request
from server.core.errors import InvalidRequest
from server.settings import Settings

ELEMENTS = 1 << 20


def _fp32(rows: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[rows, 2])
    request.raw_input_contents.append(b"\0" * (rows * 2 * 4))
    return request


def test_rows_up_to_the_limit_pass_and_one_more_is_refused() -> None:
    assert decode_request(_fp32(8), ELEMENTS, max_rows=8).inputs[0].data.shape == (8, 2)
    with pytest.raises(InvalidRequest) as info:
        decode_request(_fp32(9), ELEMENTS, max_rows=8)
    assert str(info.value) == "input 'x': 9 rows exceed the limit of 8 (--max-batch-rows)"


def test_a_huge_row_claim_is_refused_before_the_body_is_looked_at() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[2**40, 0])  # zero elements
    request.raw_input_contents.append(b"")
    with pytest.raises(InvalidRequest, match="rows exceed the limit of 1024"):
        decode_request(request, ELEMENTS)


def _raw_bytes(*lengths: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="BYTES", shape=[len(lengths)])
    request.raw_input_contents.append(b"".join(struct.pack("<I", n) + b"a" * n for n in lengths))
    return request


def _typed_bytes(*lengths: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="s", datatype="BYTES", shape=[len(lengths)])
    tensor.contents.bytes_contents.extend(b"a" * n for n in lengths)
    return request


@pytest.mark.parametrize("make", [_raw_bytes, _typed_bytes], ids=["raw", "typed"])
def test_bytes_elements_up_to_the_limit_pass_and_one_byte_more_is_refused(
    make: Callable[..., pb.ModelInferRequest],
) -> None:
    decoded = decode_request(make(3, 16), ELEMENTS, max_element_bytes=16)
    assert [len(item) for item in decoded.inputs[0].data] == [3, 16]
    with pytest.raises(InvalidRequest) as info:
        decode_request(make(3, 17), ELEMENTS, max_element_bytes=16)
    assert str(info.value) == (
        "input 's': a BYTES element of 17 bytes exceeds the limit of 16 (--max-element-bytes)"
    )


def test_a_raw_length_prefix_is_checked_before_the_element_is_cut() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="s", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 2**32 - 1))  # claims 4 GiB, holds 0
    with pytest.raises(InvalidRequest, match="a BYTES element of 4294967295 bytes exceeds"):
        decode_request(request, ELEMENTS)


def test_the_settings_defaults_are_the_codecs() -> None:
    settings = Settings()
    assert settings.max_batch_rows == codec.MAX_BATCH_ROWS
    assert settings.max_element_bytes == codec.MAX_ELEMENT_BYTES
