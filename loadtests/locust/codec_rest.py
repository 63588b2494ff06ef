"""Samples <-> V2 REST inference bodies, JSON or with Triton's binary tensor extension.

Written from the specifications (KServe Open Inference Protocol, HTTP/REST; Triton's
binary tensor data extension), not from our gateway:

- JSON: `POST /v2/models/<name>[/versions/<v>]/infer` with
  `{"inputs": [{"name", "shape", "datatype", "data": [row-major values]}], "outputs": [...]}`;
  the reply carries `{"model_name", "model_version", "outputs": [{"name", "shape",
  "datatype", "data"}]}`, an error a non-200 status and `{"error": "..."}`.
- Binary: the same JSON header with `"parameters": {"binary_data_size": n}` on each input
  and `"parameters": {"binary_data": true}` on each requested output, followed by the
  inputs' little-endian bytes in input order; `Inference-Header-Content-Length` gives the
  header's length. The reply puts its JSON first the same way (its own
  `Inference-Header-Content-Length`), then each output with `binary_data_size` in order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from loadtests.locust.samples import Sample, Tensor, WrongAnswer

HEADER_LENGTH = "Inference-Header-Content-Length"
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}


def path(model: str, version: str = "") -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def request(sample: Sample, binary: bool) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one inference request."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor in sample.inputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "shape": list(tensor.array.shape),
            "datatype": tensor.datatype,
        }
        if binary:
            blob = np.ascontiguousarray(tensor.array, DTYPES[tensor.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.array.ravel().tolist()
        inputs.append(entry)
    outputs: list[dict[str, Any]] = [
        {"name": name, "parameters": {"binary_data": True}} if binary else {"name": name}
        for name in sample.outputs
    ]
    header = json.dumps({"inputs": inputs, "outputs": outputs}, separators=(",", ":")).encode()
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def outputs(model: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Tensor]:
    """The outputs of a 200 reply, JSON or binary."""
    length = _header(headers, HEADER_LENGTH)
    header_end = len(body) if length is None else int(length)
    try:
        reply = json.loads(body[:header_end])
    except ValueError as exc:
        raise WrongAnswer(f"{model}: the reply's JSON does not parse: {exc}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("outputs"), list):
        raise WrongAnswer(f"{model}: the reply has no 'outputs' list")
    decoded = {}
    at = header_end
    for output in reply["outputs"]:
        name, datatype = output.get("name"), output.get("datatype")
        shape = tuple(int(d) for d in output.get("shape", ()))
        if datatype not in DTYPES:
            raise WrongAnswer(f"{model}: output '{name}' has datatype {datatype!r}")
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            array = np.frombuffer(body[at : at + int(size)], DTYPES[datatype])
            at += int(size)
        elif "data" in output:
            array = np.array(output["data"], DTYPES[datatype]).ravel()
        else:
            raise WrongAnswer(f"{model}: output '{name}' has neither data nor binary_data_size")
        if array.size != math.prod(shape):
            raise WrongAnswer(
                f"{model}: output '{name}' has {array.size} elements for shape {list(shape)}"
            )
        decoded[name] = Tensor(name, datatype, array.reshape(shape))
    return decoded


def error(body: bytes) -> str:
    """The first line of a failed reply's `error` (V2 REST), `message` (a google.rpc.Status)
    or body, at most 120 characters: locust groups failures by their text, which must not
    echo the request."""
    text = body[:1000].decode(errors="replace")
    try:
        reply = json.loads(body)
    except ValueError:
        reply = None
    if isinstance(reply, dict):
        text = str(reply.get("error", reply.get("message", text)))
    return text.strip().split("\n", 1)[0][:120]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None
