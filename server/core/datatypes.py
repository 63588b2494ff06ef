"""One table for tensor element types: V2 name <-> numpy <-> ONNX <-> model-config enum.

Every conversion in the server looks a type up here instead of branching on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class DataType:
    """One V2 datatype and everything the server needs to know about it."""

    name: str  # V2 name on the wire: "FP32"
    numpy: np.dtype  # little-endian numpy dtype; object for BYTES
    onnx: str  # ONNX Runtime type string: "tensor(float)"
    config_enum: str  # model_config.proto DataType name: "TYPE_FP32"
    itemsize: int  # bytes per element in raw contents; 0 for BYTES


def _row(name: str, dtype: str, onnx: str, config: str) -> DataType:
    np_dtype = np.dtype(dtype)
    itemsize = 0 if np_dtype.kind == "O" else np_dtype.itemsize
    return DataType(name, np_dtype, onnx, config, itemsize)


ALL: tuple[DataType, ...] = (
    _row("BOOL", "?", "tensor(bool)", "TYPE_BOOL"),
    _row("UINT8", "u1", "tensor(uint8)", "TYPE_UINT8"),
    _row("UINT16", "<u2", "tensor(uint16)", "TYPE_UINT16"),
    _row("UINT32", "<u4", "tensor(uint32)", "TYPE_UINT32"),
    _row("UINT64", "<u8", "tensor(uint64)", "TYPE_UINT64"),
    _row("INT8", "i1", "tensor(int8)", "TYPE_INT8"),
    _row("INT16", "<i2", "tensor(int16)", "TYPE_INT16"),
    _row("INT32", "<i4", "tensor(int32)", "TYPE_INT32"),
    _row("INT64", "<i8", "tensor(int64)", "TYPE_INT64"),
    _row("FP16", "<f2", "tensor(float16)", "TYPE_FP16"),
    _row("FP32", "<f4", "tensor(float)", "TYPE_FP32"),
    _row("FP64", "<f8", "tensor(double)", "TYPE_FP64"),
    _row("BYTES", "O", "tensor(string)", "TYPE_STRING"),
)

BY_NAME: dict[str, DataType] = {t.name: t for t in ALL}
BY_ONNX: dict[str, DataType] = {t.onnx: t for t in ALL}
BY_CONFIG_ENUM: dict[str, DataType] = {t.config_enum: t for t in ALL}
BY_NUMPY: dict[np.dtype, DataType] = {t.numpy: t for t in ALL}

NAMES: str = ", ".join(t.name for t in ALL)
