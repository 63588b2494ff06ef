"""Protobuf <-> numpy for inference requests and responses.

Raw contents are the fast path: `np.frombuffer` over the request's bytes, no copy. Typed
contents are converted through the datatype table. Responses are raw when the request
was raw, as Triton does. Everything here checks only what the request says about itself
(datatype names, shapes against byte lengths); fitting the model is `server.validation`'s job.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from inference import grpc_service_pb2 as pb
from server import datatypes
from server.datatypes import DataType
from server.errors import InvalidRequest

_LENGTH = struct.Struct("<I")


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: DataType
    data: np.ndarray


@dataclass(slots=True)
class InferenceRequest:
    model_name: str
    model_version: str
    id: str
    inputs: list[Tensor]
    requested_outputs: list[str]  # empty: every output
    raw: bool  # answer with raw_output_contents


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    raw: bool


def decode_request(request: pb.ModelInferRequest, max_elements: int) -> InferenceRequest:
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise InvalidRequest(
            f"raw_input_contents has {len(raw_contents)} entries but the request has "
            f"{len(request.inputs)} inputs; expected one entry per input, in input order"
        )
    inputs = []
    for index, tensor in enumerate(request.inputs):
        datatype = datatypes.BY_NAME.get(tensor.datatype)
        if datatype is None:
            raise InvalidRequest(
                f"input '{tensor.name}': datatype '{tensor.datatype}' is not one of "
                f"{datatypes.NAMES}"
            )
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape):
            raise InvalidRequest(
                f"input '{tensor.name}': shape {list(shape)} has a negative dimension"
            )
        count = math.prod(shape)
        if count > max_elements:
            raise InvalidRequest(
                f"input '{tensor.name}': {count} elements exceed the limit of {max_elements}"
            )
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    f"input '{tensor.name}': sets contents although the request uses "
                    "raw_input_contents; use one or the other"
                )
            data = _from_raw(tensor.name, datatype, shape, count, raw_contents[index])
        else:
            data = _from_typed(tensor.name, datatype, shape, count, tensor.contents)
        inputs.append(Tensor(tensor.name, datatype, data))
    return InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        requested_outputs=[output.name for output in request.outputs],
        raw=bool(raw_contents),
    )


def _from_raw(
    name: str, datatype: DataType, shape: tuple[int, ...], count: int, raw: bytes
) -> np.ndarray:
    if datatype.itemsize == 0:
        return _bytes_from_raw(name, shape, count, raw)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"input '{name}': raw content has {len(raw)} bytes but shape {list(shape)} of "
            f"{datatype.name} needs {expected}"
        )
    return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)


def _bytes_from_raw(name: str, shape: tuple[int, ...], count: int, raw: bytes) -> np.ndarray:
    """Raw BYTES elements are each a 4-byte little-endian length followed by the bytes."""
    items: list[bytes] = []
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 4 > end:
            raise InvalidRequest(f"input '{name}': raw BYTES content ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > end:
            raise InvalidRequest(f"input '{name}': raw BYTES element runs past the content")
        items.append(raw[offset : offset + length])
        offset += length
    if len(items) != count:
        raise InvalidRequest(
            f"input '{name}': raw content has {len(items)} BYTES elements but shape "
            f"{list(shape)} needs {count}"
        )
    return _strings(name, items, shape)


def _from_typed(
    name: str, datatype: DataType, shape: tuple[int, ...], count: int, contents: object
) -> np.ndarray:
    if datatype.contents_field is None:
        raise InvalidRequest(
            f"input '{name}': {datatype.name} data must be sent in raw_input_contents"
        )
    values = getattr(contents, datatype.contents_field)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': contents.{datatype.contents_field} has {len(values)} elements "
            f"but shape {list(shape)} needs {count}"
        )
    if datatype.itemsize == 0:
        return _strings(name, list(values), shape)
    try:
        return np.array(values, dtype=datatype.numpy).reshape(shape)
    except OverflowError as exc:
        raise InvalidRequest(
            f"input '{name}': a value in contents.{datatype.contents_field} does not fit "
            f"{datatype.name}"
        ) from exc


def _strings(name: str, items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """ONNX string tensors hold UTF-8 text; ONNX Runtime takes Python str objects."""
    array = np.empty(len(items), dtype=object)
    try:
        array[:] = [item.decode("utf-8") for item in items]
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"input '{name}': BYTES elements must be UTF-8 text for an ONNX string tensor"
        ) from exc
    return array.reshape(shape)


def encode_response(response: InferenceResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    # FP16 and BF16 have no typed field, so a response holding one is raw throughout.
    raw = response.raw or any(t.datatype.contents_field is None for t in response.outputs)
    for tensor in response.outputs:
        output = message.outputs.add(
            name=tensor.name, datatype=tensor.datatype.name, shape=tensor.data.shape
        )
        if raw:
            message.raw_output_contents.append(_to_raw(tensor))
        else:
            _fill_typed(output.contents, tensor)
    return message


def _to_raw(tensor: Tensor) -> bytes:
    if tensor.datatype.itemsize:
        return tensor.data.tobytes()
    parts = []
    for item in tensor.data.ravel():
        encoded = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def _fill_typed(contents: pb.InferTensorContents, tensor: Tensor) -> None:
    field = tensor.datatype.contents_field
    assert field is not None, "encode_response answers raw for types without a typed field"
    flat = tensor.data.ravel()
    values = getattr(contents, field)
    if tensor.datatype.itemsize:
        values.extend(flat.tolist())
    else:
        values.extend(i.encode("utf-8") if isinstance(i, str) else bytes(i) for i in flat)
