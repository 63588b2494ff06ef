"""What a model directory declares, read the way a client of the repository reads it.

The benchmark needs a model's signature (for perf_analyzer's inputs, the no-op server's
metadata and in-process ONNX Runtime) and its thread settings, without the server's code:
the signature comes from the ONNX file through onnxruntime, with the `inputs`/`outputs`
that `config.yaml` declares taking precedence (as docs/configuration.md says they do), and
`max_batch_size`, `instances`, `threads` and `version_policy` come from `config.yaml`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml

# V2 datatype <-> ONNX Runtime type string <-> numpy <-> model_config.proto DataType.
DATATYPES: dict[str, tuple[str, np.dtype, str]] = {
    "BOOL": ("tensor(bool)", np.dtype("?"), "TYPE_BOOL"),
    "UINT8": ("tensor(uint8)", np.dtype("u1"), "TYPE_UINT8"),
    "UINT16": ("tensor(uint16)", np.dtype("<u2"), "TYPE_UINT16"),
    "UINT32": ("tensor(uint32)", np.dtype("<u4"), "TYPE_UINT32"),
    "UINT64": ("tensor(uint64)", np.dtype("<u8"), "TYPE_UINT64"),
    "INT8": ("tensor(int8)", np.dtype("i1"), "TYPE_INT8"),
    "INT16": ("tensor(int16)", np.dtype("<i2"), "TYPE_INT16"),
    "INT32": ("tensor(int32)", np.dtype("<i4"), "TYPE_INT32"),
    "INT64": ("tensor(int64)", np.dtype("<i8"), "TYPE_INT64"),
    "FP16": ("tensor(float16)", np.dtype("<f2"), "TYPE_FP16"),
    "FP32": ("tensor(float)", np.dtype("<f4"), "TYPE_FP32"),
    "FP64": ("tensor(double)", np.dtype("<f8"), "TYPE_FP64"),
    "BYTES": ("tensor(string)", np.dtype("O"), "TYPE_STRING"),
}
_BY_ONNX = {onnx: name for name, (onnx, _, _) in DATATYPES.items()}


@dataclass(frozen=True, slots=True)
class Tensor:
    """An input or output; `dims` exclude the batch dimension when the model batches."""

    name: str
    datatype: str  # V2 name: "FP32"
    dims: tuple[int, ...]  # -1 for a dynamic dimension

    @property
    def numpy(self) -> np.dtype:
        return DATATYPES[self.datatype][1]

    @property
    def config_enum(self) -> str:
        return DATATYPES[self.datatype][2]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str  # the newest version directory
    versions: tuple[str, ...]  # every version directory holding a model.onnx, oldest first
    path: Path  # the newest version's model.onnx
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    instances: int
    intra_op_threads: int  # 0: chosen from the core count, see `intra_op_threads_for`
    inter_op_threads: int
    all_versions: bool  # version_policy {all: true}

    def full_shape(self, tensor: Tensor) -> tuple[int, ...]:
        """The shape metadata reports: -1 leads for the batch dimension."""
        return (-1, *tensor.dims) if self.max_batch_size > 0 else tensor.dims

    def intra_op_threads_for(self, workers: int) -> int:
        """The server's rule (docs/configuration.md): `threads.intra_op`, or the cores split
        over workers x instances so that the sessions do not oversubscribe them."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, (os.cpu_count() or 1) // max(1, workers * self.instances))


def read(repository: Path, name: str, version: str | None = None) -> ModelInfo:
    """`repository/name`: config.yaml and the ONNX file of `version` (default: the newest)."""
    model_dir = repository / name
    config_path = model_dir / "config.yaml"
    config: dict[str, Any] = {}
    if config_path.exists():
        config = yaml.safe_load(config_path.read_text()) or {}
    versions = sorted(
        (p.name for p in model_dir.iterdir() if p.name.isdigit() and (p / "model.onnx").is_file()),
        key=int,
    )
    if not versions:
        raise FileNotFoundError(f"{model_dir} has no <version>/model.onnx: run `make models`")
    chosen = version or versions[-1]
    path = model_dir / chosen / "model.onnx"
    max_batch_size = int(config.get("max_batch_size", 0))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batched = max_batch_size > 0
    threads = config.get("threads") or {}
    return ModelInfo(
        name=name,
        version=chosen,
        versions=tuple(versions),
        path=path,
        max_batch_size=max_batch_size,
        inputs=_tensors(config.get("inputs"), session.get_inputs(), batched),
        outputs=_tensors(config.get("outputs"), session.get_outputs(), batched),
        instances=int(config.get("instances", 1)),
        intra_op_threads=int(threads.get("intra_op", 0)),
        inter_op_threads=int(threads.get("inter_op", 1)),
        all_versions=bool((config.get("version_policy") or {}).get("all")),
    )


def session_options(info: ModelInfo, workers: int = 1) -> ort.SessionOptions:
    """The session options the server runs `info` with under `workers` processes."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = info.intra_op_threads_for(workers)
    options.inter_op_num_threads = info.inter_op_threads
    options.log_severity_level = 4
    return options


def _tensors(declared: Any, nodes: list[Any], batched: bool) -> tuple[Tensor, ...]:
    """config.yaml's declaration when it has one, else the ONNX file's (batch dim dropped)."""
    if declared:
        return tuple(
            Tensor(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t.get("dims", ())))
            for t in declared
        )
    tensors = []
    for node in nodes:
        dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in (node.shape or ()))
        tensors.append(Tensor(node.name, _BY_ONNX[node.type], dims[1:] if batched else dims))
    return tuple(tensors)
