"""The seams between the data plane and what serves models.

`ServedModel` is one servable version: the data plane validates a request against it and
submits the plan, getting a future back. A batched ONNX version implements it today; a
pipeline or a cached model can stand behind the same two methods. `ModelStore` is what
the data plane needs from the repository, which implements it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from server.core.errors import InferenceError
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import ModelConfig
from server.core.statistics import BatcherStatistics, ModelStats
from server.core.tensors import Signature

Outputs = list[np.ndarray]

# RepositoryIndex states, as Triton spells them.
READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"


class ServedModel(Protocol):
    """One loaded model version."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    # An attribute, not a property: a reload that changes only labels or deprecation keeps
    # the version and gives it the new config (server.repository.repository.rebuild_key).
    config: ModelConfig

    @property
    def signature(self) -> Signature: ...

    @property
    def stats(self) -> ModelStats: ...

    def validate(self, request: InferenceRequest) -> Plan:
        """The request checked against this version; raises InvalidRequest."""
        ...

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        """Queue a plan; the future resolves to its outputs in `plan.outputs` order.

        `deadline` is on the event loop's clock. `eager` allows an idle version to run the
        plan before returning (a lone unary call then never suspends)."""
        ...

    def statistics(self) -> BatcherStatistics: ...

    def abort(self, error: InferenceError) -> None:
        """Fail every queued and running plan with `error` at once: the shutdown grace
        ran out, and each caller should get a status before grpc cancels its call."""
        ...

    async def close(self) -> None:
        """Refuse new plans, finish the queued and running ones, release resources.
        Cancelling it may abort the running ones instead (a shutdown out of time)."""
        ...


@dataclass(frozen=True, slots=True)
class StepStatistics:
    """One step of a composed version (a pipeline) and its counters. `batched`: the step
    runs in a batcher of its own (a built-in or Python step), so its executions and queue
    and compute times are its own; a model step's batching is its model's."""

    name: str
    batched: bool
    stats: ModelStats


@runtime_checkable
class Composed(Protocol):
    """A served version made of steps (a pipeline): statistics per step, in order. Read
    at scrape time only, on the event loop thread."""

    def step_statistics(self) -> list[StepStatistics]: ...


@dataclass(frozen=True, slots=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class ModelStore(Protocol):
    """The models the data plane serves: the repository."""

    def resolve(self, name: str, version: str = "") -> ServedModel:
        """The version to serve (the newest ready one for ""); ModelNotFound or
        ModelUnavailable otherwise."""
        ...

    def versions(self, name: str) -> list[ServedModel]:
        """The ready versions of one model, oldest first."""
        ...

    def loaded(self) -> list[ServedModel]:
        """Every ready version of every model."""
        ...

    def index(self, ready_only: bool = False) -> list[IndexEntry]: ...

    def is_ready(self) -> bool: ...

    async def load(self, name: str) -> None: ...

    async def unload(self, name: str) -> None: ...
