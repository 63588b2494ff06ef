"""Steps over class scores, on the last axis: `softmax`, `argmax` and `classify`.

`classify` is Triton's classification extension as a step: the top `k` classes of each
row as BYTES "value:index[:label]", labels from a file in the version directory (one per
line). Any served output can give the same answer by request (`classification: k`, see
server/execution/classification.py); the step is for a pipeline whose output is the
classes themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from server.core import datatypes
from server.core.tensors import TensorSpec
from server.execution.classification import top_classes
from server.execution.steps.options import Options
from server.execution.steps.step import require

BYTES = datatypes.BY_NAME["BYTES"]
INT64 = datatypes.BY_NAME["INT64"]


def _scores(spec: TensorSpec, kinds: str, what: str) -> None:
    require(
        spec.datatype.numpy.kind in kinds and len(spec.dims) >= 1,
        f"input 'input' must be {what} with at least one dim, got "
        f"{spec.datatype.name} {list(spec.dims)}",
    )


class Softmax:
    """input [..., classes] (float) -> output, the same shape, summing to 1 on the last axis."""

    inputs = ("input",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        Options(options).finish()

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        spec = inputs["input"]
        _scores(spec, "f", "floating point")
        return {"output": TensorSpec("output", spec.datatype, spec.dims)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = inputs["input"]
        exp = np.exp(values - values.max(axis=-1, keepdims=True))
        return {"output": (exp / exp.sum(axis=-1, keepdims=True)).astype(values.dtype)}


class Argmax:
    """input [..., classes] -> index (INT64) and score (the input's type), shape [...]."""

    inputs = ("input",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        Options(options).finish()

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        spec = inputs["input"]
        _scores(spec, "iuf", "integer or floating point")
        return {
            "index": TensorSpec("index", INT64, spec.dims[:-1]),
            "score": TensorSpec("score", spec.datatype, spec.dims[:-1]),
        }

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = inputs["input"]
        index = values.argmax(axis=-1)
        score = np.take_along_axis(values, index[..., None], axis=-1)[..., 0]
        return {"index": index.astype(np.int64), "score": score}


class Classify:
    """input [classes] -> classes, BYTES [min(k, classes)]: options k (default 1), labels."""

    inputs = ("input",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        read = Options(options)
        self.k = read.integer("k", 1)
        labels = read.optional_file("labels", directory)
        read.finish()
        self.labels = tuple(labels.read_text(encoding="utf-8").splitlines()) if labels else ()

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        spec = inputs["input"]
        _scores(spec, "iuf", "integer or floating point")
        require(len(spec.dims) == 1, f"input 'input' must have dims [classes], got {spec.dims}")
        classes = spec.dims[0]
        count = min(self.k, classes) if classes > 0 else -1
        return {"classes": TensorSpec("classes", BYTES, (count,))}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"classes": top_classes(inputs["input"], self.k, self.labels)}
