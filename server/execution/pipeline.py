"""A pipeline version (Triton: an ensemble) behind the data plane's `ServedModel` seam.

A request runs through the pipeline's stages in order, each reading named tensors and
adding its own. A step stage runs a pre- or post-processing step in its own `Batcher`
(worker threads, never the event loop), so concurrent requests share its batches. A model
stage resolves its model through the store at request time and submits to that version's
own batcher: requests to the pipeline and to the model share batches, and a reload of
the model is picked up by the next request.

Errors keep their kind (so their status code) and name the pipeline and the step. A model
stage whose model is gone reports UNAVAILABLE: the pipeline exists, its model does not.

Statistics: the pipeline's own `stats` count its requests; `compute_input` is the time in
the steps before the first model, `compute_infer` from the first model to the end of the
last, `compute_output` the steps after it (a pipeline has no queue of its own: its steps
do). Each stage has statistics of its own (`step_stats`): requests through it, and for
steps their batcher's executions, queue and compute times. Model stages also count in the
model's own statistics, as the model's direct requests do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.core.datatypes import DataType
from server.core.errors import (
    InferenceError,
    ModelNotFound,
    ModelUnavailable,
    RuntimeFailure,
)
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import ModelConfig
from server.core.models import ModelStore, Outputs, StepStatistics
from server.core.statistics import BatcherStatistics, ModelStats
from server.core.tensors import Signature, Tensor, TensorSpec
from server.core.validation import Validator
from server.execution.batcher import Batcher
from server.execution.classification import Classification, ClassifiedPlan
from server.execution.steps.step import Step

Pairs = tuple[tuple[str, str], ...]  # (the stage's tensor name, the pipeline's)


class Stage(Protocol):
    name: str
    stats: ModelStats

    async def run(
        self, tensors: Mapping[str, np.ndarray], rows: int, deadline: float | None
    ) -> dict[str, np.ndarray]:
        """The stage's outputs, by pipeline tensor name."""
        ...


class StepRunner:
    """Runs a step on a batch for its batcher, and checks that it kept its promises: every
    declared output, one row per input row, the declared type and dims."""

    def __init__(self, label: str, step: Step, outputs: Sequence[TensorSpec]) -> None:
        self._label = label
        self._step = step
        self._outputs = {spec.name: spec for spec in outputs}

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str]) -> Outputs:
        rows = len(next(iter(feeds.values())))
        produced = self._step.run(feeds)
        results = []
        for name in outputs:
            spec = self._outputs[name]
            array = produced.get(name)
            if (
                not isinstance(array, np.ndarray)
                or array.dtype != spec.datatype.numpy
                or array.shape[:1] != (rows,)
                or len(array.shape) != 1 + len(spec.dims)
                or any(d not in (-1, n) for d, n in zip(spec.dims, array.shape[1:], strict=True))
            ):
                got = (
                    f"{array.dtype} {list(array.shape)}"
                    if isinstance(array, np.ndarray)
                    else type(array).__name__
                )
                raise RuntimeFailure(
                    f"step '{self._label}' returned output '{name}' as {got}; it declared "
                    f"{spec.datatype.name} [{rows}, {', '.join(map(str, spec.dims))}]"
                )
            results.append(array)
        return results


@dataclass(eq=False)
class StepStage:
    """A step in its own batcher."""

    name: str
    reads: Pairs
    writes: Pairs
    types: tuple[DataType, ...]  # of the outputs, in `writes` order
    batcher: Batcher
    stats: ModelStats

    async def run(
        self, tensors: Mapping[str, np.ndarray], rows: int, deadline: float | None
    ) -> dict[str, np.ndarray]:
        feeds = {own: tensors[theirs] for own, theirs in self.reads}
        outputs = tuple(own for own, _ in self.writes)
        results = await self.batcher.enqueue(Plan(feeds, outputs, self.types, rows), deadline)
        return {theirs: array for (_, theirs), array in zip(self.writes, results, strict=True)}


@dataclass(eq=False)
class ModelStage:
    """A model of the repository, resolved when each request reaches it."""

    name: str
    model: str
    version: str
    reads: tuple[tuple[str, str, DataType], ...]  # (model input, pipeline tensor, type)
    writes: Pairs
    store: ModelStore
    stats: ModelStats = field(default_factory=ModelStats)

    async def run(
        self, tensors: Mapping[str, np.ndarray], rows: int, deadline: float | None
    ) -> dict[str, np.ndarray]:
        try:
            served = self.store.resolve(self.model, self.version)
        except ModelNotFound as exc:
            raise ModelUnavailable(exc.message, model=self.model) from exc
        request = InferenceRequest(
            model_name=self.model,
            model_version=self.version,
            id="",
            inputs=[Tensor(own, datatype, tensors[theirs]) for own, theirs, datatype in self.reads],
            requested_outputs=[own for own, _ in self.writes],
        )
        start = time.perf_counter_ns()
        error: type[BaseException] | None = None
        try:
            results = await served.submit(served.validate(request), deadline, False)
        except BaseException as exc:
            error = type(exc)
            raise
        finally:
            ok = error is None
            served.stats.record_request(
                ok,
                time.perf_counter_ns() - start,
                time.time_ns() // 1_000_000 if ok else 0,
                error or Exception,
            )
        return {theirs: array for (_, theirs), array in zip(self.writes, results, strict=True)}


@dataclass(eq=False)
class PipelineVersion:
    """One version of a pipeline: its signature, and its stages in order."""

    name: str
    version: int
    config: ModelConfig
    signature: Signature
    stages: tuple[Stage, ...]
    stats: ModelStats = field(default_factory=ModelStats)
    _validator: Validator = field(init=False)
    _classification: Classification = field(init=False)
    _phases: tuple[int, ...] = field(init=False)  # per stage: 0 input, 1 infer, 2 output
    _running: set[asyncio.Future[Outputs]] = field(init=False, default_factory=set)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._validator = Validator(self.name, self.signature)
        self._classification = Classification(self.name, self.signature, self.config.class_labels)
        models = [i for i, stage in enumerate(self.stages) if isinstance(stage, ModelStage)]
        first, last = (models[0], models[-1]) if models else (0, len(self.stages) - 1)
        self._phases = tuple(
            0 if i < first else 2 if i > last else 1 for i in range(len(self.stages))
        )

    @property
    def step_stats(self) -> dict[str, ModelStats]:
        return {stage.name: stage.stats for stage in self.stages}

    def step_statistics(self) -> list[StepStatistics]:
        """The stages' statistics in order, for the metrics (`core.models.Composed`)."""
        return [
            StepStatistics(stage.name, isinstance(stage, StepStage), stage.stats)
            for stage in self.stages
        ]

    def validate(self, request: InferenceRequest) -> Plan:
        plan = self._validator.check(request)
        if request.output_parameters:
            return self._classification.plan(plan, request.output_parameters)
        return plan

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        """Start the plan through the stages; `eager` does not apply (steps run in threads)."""
        if self._closed:
            raise ModelUnavailable(f"model '{self.name}' is unloading", model=self.name)
        task = asyncio.get_running_loop().create_task(self._run(plan, deadline))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        if isinstance(plan, ClassifiedPlan):
            return self._classification.results(plan, task)
        return task

    async def _run(self, plan: Plan, deadline: float | None) -> Outputs:
        tensors: dict[str, np.ndarray] = dict(plan.feeds)
        phases = [0, 0, 0]
        for stage, phase in zip(self.stages, self._phases, strict=True):
            start = time.perf_counter_ns()
            try:
                tensors.update(await stage.run(tensors, plan.rows, deadline))
            except BaseException as exc:
                stage.stats.record_request(False, time.perf_counter_ns() - start, 0, type(exc))
                if isinstance(exc, InferenceError):
                    raise self._named(stage, exc) from exc
                if isinstance(exc, Exception):
                    raise RuntimeFailure(
                        f"pipeline '{self.name}' step '{stage.name}' failed: {exc!r}",
                        model=self.name,
                    ) from exc
                raise  # cancelled: the client went away
            elapsed = time.perf_counter_ns() - start
            stage.stats.record_request(True, elapsed, time.time_ns() // 1_000_000)
            phases[phase] += elapsed
        self.stats.record_execution(plan.rows, (0,), *phases)
        return [tensors[name] for name in plan.outputs]

    def _named(self, stage: Stage, error: InferenceError) -> InferenceError:
        """The same kind of error, naming the pipeline and the step."""
        return type(error)(
            f"pipeline '{self.name}' step '{stage.name}': {error.message}",
            model=self.name,
            version=str(self.version),
            tensor=error.tensor,
            reason=error.reason,
        )

    def statistics(self) -> BatcherStatistics:
        batchers = [s.batcher.statistics() for s in self.stages if isinstance(s, StepStage)]
        return BatcherStatistics(
            queue_depth=sum(b.queue_depth for b in batchers),
            in_flight=len(self._running),
            slots=sum(b.slots for b in batchers),
        )

    def abort(self, error: InferenceError) -> None:
        """Fail the steps' queued and running work; each running request then fails with
        `error` at its step. Its models are the repository's, which aborts them too."""
        self._closed = True
        for stage in self.stages:
            if isinstance(stage, StepStage):
                stage.batcher.abort(error)

    async def close(self) -> None:
        """Refuse new requests, let the running ones finish, then close the steps' batchers
        (the models belong to the repository)."""
        self._closed = True
        if self._running:
            await asyncio.wait(set(self._running))
        await asyncio.gather(*(s.batcher.close() for s in self.stages if isinstance(s, StepStage)))
