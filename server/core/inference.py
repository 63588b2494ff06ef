"""An inference request and its response, as every face decodes and encodes them.

They say nothing about the wire: how a face received the tensors (raw bytes, typed
contents, JSON) and how it will answer is the face's own business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from server.core.datatypes import DataType
from server.core.model_config import Deprecation
from server.core.tensors import Tensor

Parameter = bool | int | float | str
Parameters = Mapping[str, Parameter]


@dataclass(slots=True)
class InferenceRequest:
    model_name: str
    model_version: str  # empty: the newest ready version
    id: str
    inputs: list[Tensor]
    requested_outputs: list[str]  # empty: every output
    parameters: Parameters = field(default_factory=dict)  # the request's own parameters
    output_parameters: Mapping[str, Parameters] = field(default_factory=dict)  # by output name


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]
    deprecation: Deprecation | None = None  # the version that answered is on its way out


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated request, ready to queue: what to feed, what to compute, how many rows."""

    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    output_types: tuple[DataType, ...]  # one per output
    rows: int  # batch dimension size; 0 for models without one
