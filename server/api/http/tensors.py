"""A tensor's `data` in V2 JSON <-> numpy.

`data` is a JSON array of the tensor's elements in row-major order, flat or nested (any
rectangular nesting with the right element count). Elements must be of the datatype's
JSON kind: booleans for BOOL, integers in range for the integer types, numbers for the
floating-point types, strings for BYTES (UTF-8 text). FP16 travels as numbers. Nothing is
cast silently: 1.5 for an INT32 input or 300 for a UINT8 one is a 400, not a truncation.
Replies print `data` flat, floats in their shortest round-tripping form (orjson).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server.core.datatypes import DataType
from server.core.errors import InvalidRequest
from server.core.limits import objects, too_long
from server.core.tensors import Tensor

# Which numpy kinds np.array() may infer from JSON elements, per datatype kind (integer
# data inferred as float is then checked for fractions).
_ACCEPTED_KINDS = {"b": "b", "i": "iuf", "u": "iuf", "f": "iuf"}
_ELEMENTS = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers"}


def decode(
    name: str, datatype: DataType, shape: tuple[int, ...], count: int, data: Any, longest: int
) -> np.ndarray:
    """One input's JSON `data` as an array of `shape` and the datatype's dtype; BYTES
    elements of at most `longest` bytes."""
    if not isinstance(data, list):
        raise _invalid(name, f"data must be a JSON array, not {type(data).__name__}")
    if datatype.itemsize == 0:
        return _bytes(name, shape, count, data, longest)
    try:
        array = np.array(data)
    except (ValueError, OverflowError) as exc:
        raise _invalid(
            name, "data must be a rectangular array of numbers, booleans or strings"
        ) from exc
    if array.size != count:
        raise _invalid(
            name, f"data has {array.size} elements but shape {list(shape)} needs {count}"
        )
    if count == 0:
        return np.empty(shape, dtype=datatype.numpy)
    kind, inferred = datatype.numpy.kind, array.dtype.kind
    if inferred == "O":  # numbers too large for one numpy type, or non-numbers
        if not all(type(x) in (int, float) for x in array.ravel()):
            raise _invalid(name, f"{datatype.name} data must hold {_ELEMENTS[kind]}")
        inferred = "f"
    if inferred not in _ACCEPTED_KINDS[kind]:
        raise _invalid(name, f"{datatype.name} data must hold {_ELEMENTS[kind]}")
    if kind in "iu":
        return _integers(name, datatype, data, array).reshape(shape)
    return np.asarray(array, dtype=datatype.numpy).reshape(shape)


def _integers(name: str, datatype: DataType, data: list[Any], array: np.ndarray) -> np.ndarray:
    """Integer data, exactly: in range, and no fractions. np.array infers float64 for a
    mix such as [0, 2**64 - 1], so such data is converted again, straight to the dtype."""
    if array.dtype.kind in "iu":
        info = np.iinfo(datatype.numpy)
        if array.min() < info.min or array.max() > info.max:
            raise _invalid(name, f"a value is outside the range of {datatype.name}")
        return array.astype(datatype.numpy, copy=False)
    try:
        exact = np.array(data, dtype=datatype.numpy)
    except (OverflowError, TypeError, ValueError) as exc:
        raise _invalid(name, f"a value is outside the range of {datatype.name}") from exc
    if not np.array_equal(exact, array.astype(np.float64)):
        raise _invalid(name, f"{datatype.name} data must hold integers")
    return exact


def _bytes(
    name: str, shape: tuple[int, ...], count: int, data: list[Any], longest: int
) -> np.ndarray:
    """BYTES elements: strings only (np.array would turn numbers into strings too)."""
    items: list[bytes] = []
    stack = [iter(data)]  # row-major order through any nesting
    while stack:
        for element in stack[-1]:
            if isinstance(element, list):
                stack.append(iter(element))
                break
            if not isinstance(element, str):
                raise _invalid(name, "BYTES data must hold strings")
            item = element.encode("utf-8")
            if len(item) > longest:
                raise too_long(name, len(item), longest)
            items.append(item)
        else:
            stack.pop()
    if len(items) != count:
        raise _invalid(
            name, f"data has {len(items)} elements but shape {list(shape)} needs {count}"
        )
    return objects(items, shape)


def encode(tensor: Tensor) -> np.ndarray | list[str]:
    """One output's `data`: a flat array orjson prints, or BYTES as UTF-8 strings."""
    if tensor.datatype.itemsize:
        return np.ascontiguousarray(tensor.data).reshape(-1)
    texts = []
    for item in tensor.data.ravel():
        if isinstance(item, str):
            texts.append(item)
            continue
        try:
            texts.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidRequest(
                f"output '{tensor.name}' holds bytes that are not UTF-8 text, which JSON "
                "cannot carry; request it with parameters.binary_data",
                tensor=tensor.name,
            ) from exc
    return texts


def _invalid(name: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"input '{name}': {problem}", tensor=name)
