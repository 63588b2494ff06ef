"""What the benchmark sends to each model, to perf_analyzer and to in-process ONNX Runtime."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from loadtests.model_info import ModelInfo


@dataclass(frozen=True, slots=True)
class Workload:
    model: str
    interval_ms: int
    """perf_analyzer's measurement window: a few hundred requests at concurrency 1."""
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    """Sizes of dynamic dims, without the batch dim (perf_analyzer's --shape)."""
    zeros: bool = False
    """Zeros instead of random values: random INT64 token ids fall outside the vocabulary."""
    row_ms: float = 0.0
    """Rough compute time of one row here; a window must hold several requests' latency,
    which grows with concurrency for compute-bound models."""

    def window_ms(self, concurrency: int, scale: float) -> int:
        return max(200, int(self.interval_ms * scale), int(concurrency * self.row_ms * 4))

    def perf_analyzer_args(self) -> list[str]:
        args = ["--input-data", "zero" if self.zeros else "random"]
        for name, dims in self.shapes.items():
            args += ["--shape", f"{name}:{','.join(map(str, dims))}"]
        return args

    def feeds(self, info: ModelInfo, batch: int) -> dict[str, np.ndarray]:
        """The same tensors perf_analyzer sends, `batch` rows of them (shapes from the ONNX
        file and config.yaml, see `loadtests.model_info`)."""
        rng = np.random.default_rng(0)
        feeds = {}
        for tensor in info.inputs:
            dims = self.shapes.get(tensor.name, tensor.dims)
            if any(d < 0 for d in dims):
                raise ValueError(f"{self.model}: give a shape for dynamic input '{tensor.name}'")
            shape = (batch, *dims)
            if self.zeros:
                feeds[tensor.name] = np.zeros(shape, tensor.numpy)
            else:
                feeds[tensor.name] = rng.random(shape).astype(tensor.numpy)
        return feeds


_TOKENS = (128,)  # minilm's tokenizer pads every text to 128 tokens

WORKLOADS: dict[str, Workload] = {
    workload.model: workload
    for workload in (
        Workload("digits", interval_ms=1500),
        Workload(
            "minilm",
            interval_ms=2000,
            shapes={"input_ids": _TOKENS, "attention_mask": _TOKENS, "token_type_ids": _TOKENS},
            zeros=True,
            row_ms=14.0,
        ),
        Workload("text_direction", interval_ms=2000, row_ms=0.6),
    )
}
SMALL = "digits"
