"""What a pipeline step is: a function over a batch of rows, with declared tensors.

Every step, built-in or a user's own class (`python: package.module:Class` in
config.yaml), has the same interface. It is built once per pipeline version from its
`options` and the version directory (for the files its options name), then `bind` is given
the specs of the tensors it will receive, so that a pipeline that does not fit fails to
load instead of failing requests. `run` is called from a worker thread on a batch: the
rows of several requests concatenated on axis 0, so row i of every output must come from
row i of the inputs alone.

Errors: `bind` and the constructor raise ValueError (or TypeError) for configuration that
does not fit, and the pipeline reports it as a load failure naming the step; `run` raises
InvalidRequest for a row it cannot process, naming the input and the row, and only that
request fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from server.core.tensors import TensorSpec


class Step(Protocol):
    @property
    def inputs(self) -> tuple[str, ...]:
        """The names of the tensors the step reads."""
        ...

    def bind(self, inputs: Mapping[str, TensorSpec]) -> Mapping[str, TensorSpec]:
        """The specs of the outputs, given those of the inputs (dims without the batch)."""
        ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Every output for a batch of rows."""
        ...


StepFactory = Callable[[Mapping[str, Any], Path], Step]
"""Builds a step from its options and the version directory."""


def fits(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether two dims can describe the same tensor: same rank, equal or -1 (any size)."""
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def require(condition: bool, message: str) -> None:
    """A configuration check: ValueError with `message` when `condition` fails."""
    if not condition:
        raise ValueError(message)
