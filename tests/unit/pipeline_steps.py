"""Users' own steps for the pipeline tests (`python: pipeline_steps:Scale` in config.yaml):
the interface docs/pipelines.md describes, nothing more. pytest puts tests/unit on
sys.path, which is where the server imports them from in these tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from server.core.errors import InvalidRequest
from server.core.tensors import TensorSpec


class Scale:
    """input -> output = input * factor; refuses rows that are not finite."""

    inputs = ("input",)

    def __init__(self, options: Mapping[str, Any], directory: Path) -> None:
        self.factor = float(options["factor"])

    def bind(self, inputs: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
        spec = inputs["input"]
        return {"output": TensorSpec("output", spec.datatype, spec.dims)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = inputs["input"]
        finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        if not finite.all():
            row = int(np.argmin(finite))
            raise InvalidRequest(f"input 'input' row {row} is not finite", tensor="input")
        return {"output": values * np.float32(self.factor)}


class WrongType(Scale):
    """Declares its input's type but returns FP64: the pipeline must catch it."""

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": inputs["input"].astype(np.float64)}


class Held(Scale):
    """Holds each batch until the test sets `release`: a request surely in flight."""

    running = threading.Event()
    release = threading.Event()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        Held.running.set()
        Held.release.wait(10)
        return super().run(inputs)
