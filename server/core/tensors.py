"""Tensors as the domain sees them: values, declared specs, and a model's signature.

BYTES tensors hold `bytes` elements in numpy object arrays. Only a consumer that needs
text (an ONNX string input, a tokenizer) decodes them, after the model is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.core.datatypes import DataType


@dataclass(slots=True)
class Tensor:
    name: str
    datatype: DataType
    data: np.ndarray


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A declared input or output. `dims` excludes the batch dimension when batching."""

    name: str
    datatype: DataType
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Signature:
    """What a model version accepts and returns; dims exclude the batch dimension
    when the model batches (max_batch_size > 0)."""

    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def full_shape(self, spec: TensorSpec) -> tuple[int, ...]:
        """The shape clients see in metadata: -1 leads for the batch dimension."""
        return (-1, *spec.dims) if self.max_batch_size > 0 else spec.dims
