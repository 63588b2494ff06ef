"""Samples <-> ModelInferRequest/ModelInferResponse, for the gRPC and gRPC-web users.

The messages are tritonclient's generated ones (`tritonclient.grpc.service_pb2`): a real
client's view of the contract, wire-compatible with the server's `inference` package.
Raw: one `raw_input_contents` entry per input, little-endian, as tritonclient sends numpy
arrays; typed: the `contents` field of each datatype (PROTOCOL.md). Replies are decoded
either way: raw outputs when the server sent `raw_output_contents`, typed ones otherwise.
"""

from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from loadtests.locust.samples import Sample, Tensor, WrongAnswer

# V2 datatype -> (little-endian numpy dtype, InferTensorContents field).
DATATYPES: dict[str, tuple[np.dtype, str]] = {
    "BOOL": (np.dtype("?"), "bool_contents"),
    "UINT8": (np.dtype("u1"), "uint_contents"),
    "UINT16": (np.dtype("<u2"), "uint_contents"),
    "UINT32": (np.dtype("<u4"), "uint_contents"),
    "UINT64": (np.dtype("<u8"), "uint64_contents"),
    "INT8": (np.dtype("i1"), "int_contents"),
    "INT16": (np.dtype("<i2"), "int_contents"),
    "INT32": (np.dtype("<i4"), "int_contents"),
    "INT64": (np.dtype("<i8"), "int64_contents"),
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}


def request(
    sample: Sample, raw: bool, version: str = "", request_id: str = ""
) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name=sample.model, model_version=version, id=request_id)
    for tensor in sample.inputs:
        dtype, field = DATATYPES[tensor.datatype]
        entry = message.inputs.add(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.array.shape
        )
        if raw:
            message.raw_input_contents.append(np.ascontiguousarray(tensor.array, dtype).tobytes())
        else:
            getattr(entry.contents, field).extend(tensor.array.ravel().tolist())
    for name in sample.outputs:
        message.outputs.add(name=name)
    return message


def outputs(response: pb.ModelInferResponse) -> dict[str, Tensor]:
    """Every output as numpy, from raw or typed contents."""
    decoded = {}
    raw = response.raw_output_contents
    for index, output in enumerate(response.outputs):
        if output.datatype not in DATATYPES:
            raise WrongAnswer(f"{response.model_name}: output '{output.name}' is {output.datatype}")
        dtype, field = DATATYPES[output.datatype]
        shape = tuple(output.shape)
        if index < len(raw):
            array = np.frombuffer(raw[index], dtype)
        else:
            array = np.array(getattr(output.contents, field), dtype)
        if array.size != math.prod(shape):
            raise WrongAnswer(
                f"{response.model_name}: output '{output.name}' has {array.size} elements "
                f"for shape {list(shape)}"
            )
        decoded[output.name] = Tensor(output.name, output.datatype, array.reshape(shape))
    return decoded
