"""Builds the step a pipeline's config names: a built-in one from this table, or a user's
own class by import path (`python: package.module:Class`).

A user's class has the built-in steps' interface (`server.execution.steps.step.Step`):
it is called with the options and the version directory, and needs `inputs`, `bind` and
`run`. Its module is imported from the server's `sys.path` (an installed package, or
PYTHONPATH); the repository is as trusted as the code it names.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

from server.core.model_config import StepConfig
from server.execution.steps.image import DecodeImage
from server.execution.steps.pooling import L2Normalize, MeanPool
from server.execution.steps.scores import Argmax, Classify, Softmax
from server.execution.steps.step import Step, StepFactory
from server.execution.steps.text import Tokenize

BUILTIN: dict[str, StepFactory] = {
    "tokenize": Tokenize,
    "decode_image": DecodeImage,
    "mean_pool": MeanPool,
    "l2_normalize": L2Normalize,
    "softmax": Softmax,
    "argmax": Argmax,
    "classify": Classify,
}


def build_step(config: StepConfig, directory: Path) -> Step:
    """The configured step (not a model step); ValueError if it cannot be built."""
    if config.kind == "python":
        factory = _imported(config.target)
    else:
        found = BUILTIN.get(config.target)
        if found is None:
            raise ValueError(f"unknown step '{config.target}'; built-in steps: {sorted(BUILTIN)}")
        factory = found
    step = factory(config.options, directory)
    missing = [name for name in ("inputs", "bind", "run") if not hasattr(step, name)]
    if missing:
        raise ValueError(f"'{config.target}' does not have the step interface: no {missing}")
    return step


def _imported(target: str) -> StepFactory:
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"python: must be 'package.module:Class', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"python: cannot import {module_name!r}: {exc}") from exc
    factory: Any = getattr(module, attribute, None)
    if not callable(factory):
        raise ValueError(f"python: {module_name!r} has no class or function {attribute!r}")
    return cast(StepFactory, factory)
