"""Sequence pooling: `mean_pool` over the attention mask, and `l2_normalize`.

Together they turn a sentence encoder's per-token states into unit-length sentence
embeddings, as sentence-transformers does (mean of the states where the mask is 1, the
count clamped at 1e-9; then x / max(|x|, 1e-12)). Neither takes options.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from server.core.tensors import TensorSpec
from server.execution.steps.options import Options
from server.execution.steps.step import fits, require


class MeanPool:
    """input [seq, dim] (float) and attention_mask [seq] -> output [dim]."""

    inputs = ("input", "attention_mask")

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        Options(options).finish()

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        states, mask = inputs["input"], inputs["attention_mask"]
        require(
            states.datatype.numpy.kind == "f" and len(states.dims) == 2,
            f"input 'input' must be floating point with dims [seq, dim], got "
            f"{states.datatype.name} {list(states.dims)}",
        )
        require(
            mask.datatype.numpy.kind in "iub" and fits(mask.dims, states.dims[:1]),
            f"input 'attention_mask' must be integer or BOOL with dims [seq] matching "
            f"input's {list(states.dims)}, got {mask.datatype.name} {list(mask.dims)}",
        )
        return {"output": TensorSpec("output", states.datatype, states.dims[1:])}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        states = inputs["input"]
        mask = inputs["attention_mask"].astype(states.dtype)
        summed = np.einsum("bsd,bs->bd", states, mask)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return {"output": (summed / counts).astype(states.dtype, copy=False)}


class L2Normalize:
    """input [..., dim] (float) -> output of the same shape, unit length on the last axis."""

    inputs = ("input",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        Options(options).finish()

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        spec = inputs["input"]
        require(
            spec.datatype.numpy.kind == "f" and len(spec.dims) >= 1,
            f"input 'input' must be floating point with at least one dim, got "
            f"{spec.datatype.name} {list(spec.dims)}",
        )
        return {"output": TensorSpec("output", spec.datatype, spec.dims)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = inputs["input"]
        norms = np.linalg.norm(values, axis=-1, keepdims=True)
        return {"output": (values / np.maximum(norms, 1e-12)).astype(values.dtype, copy=False)}
