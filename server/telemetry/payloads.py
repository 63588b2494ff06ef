"""Payload logging: what a sampled request of an opted-in model carried, never its raw inputs.

A model opts in with `payload_logging` in its config.yaml (sample ratio, how many output
elements may be logged); the data plane hands this logger its sampled requests. One JSON
record per request, on the logger `server.payload` (the log stream, or the file that
`--payload-log-file` names):

    {"event": "payload", "model": "digits", "version": 2, "request_id": "7",
     "status": "ok" | the error's reason,
     "inputs":  [{"name", "datatype", "shape", "sha256"}],
     "outputs": [{"name", "datatype", "shape", "sha256", "values"?}]}

Inputs are described by name, datatype, shape and a SHA-256 of their bytes, so that a
replayed or duplicated payload can be recognised without storing it. An output's values
appear only when it has at most `max_output_elements` elements (default 0: never).
The digest covers the little-endian bytes of numeric tensors, and for BYTES each element
prefixed with its 4-byte little-endian length (the V2 raw encoding).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from typing import Any

import numpy as np

from server.core.errors import InferenceError
from server.core.inference import InferenceRequest, InferenceResponse
from server.core.models import ServedModel
from server.core.tensors import Tensor

log = logging.getLogger("server.payload")

_LENGTH = struct.Struct("<I")


def digest(array: np.ndarray) -> str:
    """SHA-256 of a tensor's bytes in the V2 raw encoding."""
    sha = hashlib.sha256()
    if array.dtype == object:
        for item in array.ravel():
            data = item if isinstance(item, bytes) else str(item).encode()
            sha.update(_LENGTH.pack(len(data)))
            sha.update(data)
    else:
        sha.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return sha.hexdigest()


def _values(array: np.ndarray) -> list[Any]:
    if array.dtype == object:
        return [
            item.decode("utf-8", "backslashreplace") if isinstance(item, bytes) else str(item)
            for item in array.ravel()
        ]
    return array.ravel().tolist()  # type: ignore[no-any-return]


def describe(tensor: Tensor, max_elements: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype.name,
        "shape": list(tensor.data.shape),
        "sha256": digest(tensor.data),
    }
    if 0 < tensor.data.size <= max_elements:
        entry["values"] = _values(tensor.data)
    return entry


class PayloadLogger:
    """The data plane's `PayloadObserver`: one log record per sampled request."""

    def __call__(
        self,
        request: InferenceRequest,
        served: ServedModel,
        response: InferenceResponse | None,
        error: BaseException | None,
    ) -> None:
        config = served.config.payload_logging
        limit = config.max_output_elements if config is not None else 0
        record: dict[str, Any] = {
            "event": "payload",
            "model": served.name,
            "version": served.version,
            "request_id": request.id,
            "status": "ok" if error is None else _reason(error),
            "inputs": [describe(tensor) for tensor in request.inputs],
        }
        if response is not None:
            record["outputs"] = [describe(tensor, limit) for tensor in response.outputs]
        log.info("payload", extra=record)


def _reason(error: BaseException) -> str:
    if isinstance(error, InferenceError):
        return error.reason
    return "cancelled" if isinstance(error, asyncio.CancelledError) else "error"
