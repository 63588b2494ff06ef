"""Triton's binary tensor data extension: a JSON header, then raw tensor bytes.

A body is the JSON header followed by binary data; the `Inference-Header-Content-Length`
header says where the JSON ends (without it, the whole body is JSON). Each binary input
declares its byte count in `parameters.binary_data_size`, and the inputs' bytes follow one
another in input order; every byte must belong to an input. Fixed-size elements are
little-endian; BYTES elements are each a 4-byte little-endian length and the bytes.

Inputs are views of the request body (`np.frombuffer` on a memoryview slice): no copy.
"""

from __future__ import annotations

import numpy as np

from server.core.datatypes import DataType
from server.core.errors import InvalidRequest
from server.core.limits import join_bytes, split_bytes
from server.core.tensors import Tensor

HEADER_LENGTH = "inference-header-content-length"
"""The request and response header (gRPC metadata keys are lower case)."""
SOURCE = "binary data"  # where binary BYTES elements come from, in error messages


def split(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary data of a body, as views of it."""
    view = memoryview(body)
    if header_length is None:
        return view, view[:0]
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidRequest(
            f"Inference-Header-Content-Length {header_length!r} is not a byte count within "
            f"the {len(body)}-byte body"
        )
    length = int(header_length)
    return view[:length], view[length:]


class BinaryData:
    """The binary data of a request, handed out to its inputs in order."""

    def __init__(self, data: memoryview, declared: bool) -> None:
        self._data = data
        self._declared = declared  # the request sent Inference-Header-Content-Length
        self._offset = 0

    def take(self, name: str, size: int) -> memoryview:
        if not self._declared:
            raise InvalidRequest(
                f"input '{name}': binary_data_size needs the Inference-Header-Content-Length "
                "header, the length of the JSON before the binary data",
                tensor=name,
            )
        start, end = self._offset, self._offset + size
        if end > len(self._data):
            raise InvalidRequest(
                f"input '{name}': binary_data_size {size} runs past the end of the binary "
                f"data ({len(self._data) - start} bytes left)",
                tensor=name,
            )
        self._offset = end
        return self._data[start:end]

    def finish(self) -> None:
        """Every byte was claimed: a longer body than the inputs declare is an error."""
        if self._offset != len(self._data):
            raise InvalidRequest(
                f"the body holds {len(self._data)} bytes of binary data but the inputs' "
                f"binary_data_size add up to {self._offset}"
            )


def decode(
    name: str,
    datatype: DataType,
    shape: tuple[int, ...],
    count: int,
    raw: memoryview,
    longest: int,
) -> np.ndarray:
    """One input's binary data as an array of `shape`; BYTES elements of at most
    `longest` bytes."""
    if datatype.itemsize == 0:
        return split_bytes(name, SOURCE, shape, count, raw, longest)
    expected = count * datatype.itemsize
    if len(raw) != expected:
        raise InvalidRequest(
            f"input '{name}': binary_data_size is {len(raw)} but shape {list(shape)} of "
            f"{datatype.name} needs {expected} bytes",
            tensor=name,
        )
    return np.frombuffer(raw, dtype=datatype.numpy).reshape(shape)


def encode(tensor: Tensor) -> bytes | memoryview:
    """One output's binary data: its little-endian bytes, or length-prefixed BYTES."""
    if tensor.datatype.itemsize:
        return np.ascontiguousarray(tensor.data).data.cast("B")
    return join_bytes(tensor.data)
