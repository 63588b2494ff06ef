"""Protobuf <-> domain for inference requests and responses.

Raw contents are the fast path: `np.frombuffer` over the request's bytes, no copy. Typed
contents are converted through the datatype table. Responses are raw when the request
was raw, as Triton does. Everything here checks only what the request says about itself
(datatype names, shapes against byte lengths); fitting the model is the core's job
(`server.core.validation`). BYTES elements stay bytes.

The server's hard limits on what a request claims (elements per input, rows, the length
of one BYTES element) are checked here, with the rules every face shares
(`server.core.limits`), before anything is allocated for it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inference import grpc_service_pb2 as pb
from server.core import datatypes
from server.core.datatypes import DataType
from server.core.errors import InvalidRequest
from server.core.inference import InferenceRequest, InferenceResponse, Parameter, Parameters
from server.core.limits import (
    MAX_BATCH_ROWS,
    MAX_ELEMENT_BYTES,
    element_bytes,
    element_count,
    join_bytes,
    objects,
    split_bytes,
    too_long,
)
from server.core.tensors import Tensor

RAW = "raw content"  # where raw BYTES elements come from, in error messages

# The InferTensorContents field of each datatype (PROTOCOL.md); FP16 and BF16 are raw only.
CONTENTS_FIELD: dict[str, str] = {
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


def decode_request(
    request: pb.ModelInferRequest,
    max_elements: int,
    max_rows: int = MAX_BATCH_ROWS,
    max_element_bytes: int = MAX_ELEMENT_BYTES,
) -> InferenceRequest:
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
                f"{datatypes.NAMES}",
                tensor=tensor.name,
            )
        shape = tuple(tensor.shape)
        if shape and min(shape) < 0:
            raise InvalidRequest(
                f"input '{tensor.name}': shape {list(shape)} has a negative dimension",
                tensor=tensor.name,
            )
        count = element_count(tensor.name, shape, max_elements, max_rows)
        if raw_contents:
            if tensor.HasField("contents"):
                raise InvalidRequest(
                    f"input '{tensor.name}': sets contents although the request uses "
                    "raw_input_contents; use one or the other",
                    tensor=tensor.name,
                )
            raw = raw_contents[index]
            data = _from_raw(tensor.name, datatype, shape, count, raw, max_element_bytes)
        else:
            data = _from_typed(
                tensor.name, datatype, shape, count, tensor.contents, max_element_bytes
            )
        inputs.append(Tensor(tensor.name, datatype, data))
    decoded = InferenceRequest(
        model_name=request.model_name,
        model_version=request.model_version,
        id=request.id,
        inputs=inputs,
        requested_outputs=[output.name for output in request.outputs],
    )
    if request.parameters:
        decoded.parameters = _parameters(request.parameters)
    if request.outputs and any(output.parameters for output in request.outputs):
        decoded.output_parameters = {
            output.name: _parameters(output.parameters) for output in request.outputs
        }
    return decoded


def _parameters(message: Mapping[str, pb.InferParameter]) -> Parameters:
    """InferParameter's oneof as plain values; an unset one is left out."""
    values: dict[str, Parameter] = {}
    for key, parameter in message.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is not None:
            values[key] = getattr(parameter, choice)
    return values


def _from_raw(
    name: str, datatype: DataType, shape: tuple[int, ...], count: int, raw: bytes, longest: int
) -> np.ndarray:
    if datatype.itemsize == 0:
        return split_bytes(name, RAW, shape, count, raw, longest)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"input '{name}': raw content has {len(raw)} bytes but shape {list(shape)} of "
            f"{datatype.name} needs {expected}",
            tensor=name,
        )
    return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)


def _from_typed(
    name: str,
    datatype: DataType,
    shape: tuple[int, ...],
    count: int,
    contents: object,
    longest: int,
) -> np.ndarray:
    field = CONTENTS_FIELD.get(datatype.name)
    if field is None:
        raise InvalidRequest(
            f"input '{name}': {datatype.name} data must be sent in raw_input_contents",
            tensor=name,
        )
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidRequest(
            f"input '{name}': contents.{field} has {len(values)} elements "
            f"but shape {list(shape)} needs {count}",
            tensor=name,
        )
    if datatype.itemsize == 0:
        items = list(values)
        length = max(map(len, items), default=0)
        if length > longest:
            raise too_long(name, length, longest)
        return objects(items, shape)
    try:
        return np.array(values, dtype=datatype.numpy).reshape(shape)
    except OverflowError as exc:
        raise InvalidRequest(
            f"input '{name}': a value in contents.{field} does not fit {datatype.name}",
            tensor=name,
        ) from exc


def encode_response(response: InferenceResponse, raw: bool) -> pb.ModelInferResponse:
    """`raw`: answer in raw_output_contents (the request was raw)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version, id=response.id
    )
    # FP16 and BF16 have no typed field, so a response holding one is raw throughout.
    raw = raw or any(t.datatype.name not in CONTENTS_FIELD for t in response.outputs)
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
    return join_bytes(tensor.data)


def _fill_typed(contents: pb.InferTensorContents, tensor: Tensor) -> None:
    values = getattr(contents, CONTENTS_FIELD[tensor.datatype.name])
    flat = tensor.data.ravel()
    if tensor.datatype.itemsize:
        values.extend(flat.tolist())
    else:
        values.extend(element_bytes(item) for item in flat)
