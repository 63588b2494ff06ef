"""A loaded ONNX model version behind the data plane's `ServedModel` seam, and the factory
the repository builds versions with.

The version composes its parts: the core `Validator` for its signature, the ONNX Runtime
session, the `Batcher` that runs the session, and the classification extension (applied
only to requests whose outputs ask for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.core.errors import InferenceError, RepositoryError
from server.core.inference import InferenceRequest, Plan
from server.core.model_config import ModelConfig, Padding
from server.core.models import Outputs
from server.core.observers import BatchObserver
from server.core.statistics import BatcherStatistics, ModelStats
from server.core.tensors import Signature
from server.core.validation import Validator
from server.execution.batcher import Batcher
from server.execution.classification import Classification, ClassifiedPlan
from server.execution.onnx import OnnxModel


@dataclass(eq=False)
class BatchedVersion:
    """One ONNX model version: validated, batched, run on ONNX Runtime."""

    name: str
    version: int
    config: ModelConfig
    runtime: OnnxModel
    stats: ModelStats = field(default_factory=ModelStats)
    observer: BatchObserver | None = None  # traces queueing and execution, when tracing
    _validator: Validator = field(init=False)
    _batcher: Batcher = field(init=False)
    _classification: Classification = field(init=False)

    def __post_init__(self) -> None:
        if self.config.batching.padding is not None:
            _check_padding(self.name, self.runtime.signature, self.config.batching.padding)
        self._validator = Validator(self.name, self.runtime.signature)
        self._classification = Classification(
            self.name, self.runtime.signature, self.config.class_labels
        )
        self._batcher = Batcher(
            self.name,
            self.runtime,
            self.config.max_batch_size,
            self.config.batching,
            self.config.instances,
            self.stats,
            inline=self.config.execution == "inline",
            observer=self.observer,
        )

    @property
    def signature(self) -> Signature:
        return self.runtime.signature

    def validate(self, request: InferenceRequest) -> Plan:
        plan = self._validator.check(request)
        if request.output_parameters:
            return self._classification.plan(plan, request.output_parameters)
        return plan

    def submit(self, plan: Plan, deadline: float | None, eager: bool) -> asyncio.Future[Outputs]:
        future = self._batcher.enqueue(plan, deadline, eager)
        if isinstance(plan, ClassifiedPlan):
            return self._classification.results(plan, future)
        return future

    def statistics(self) -> BatcherStatistics:
        return self._batcher.statistics()

    def abort(self, error: InferenceError) -> None:
        self._batcher.abort(error)
        self.runtime.terminate()  # nobody waits for the runs in progress any more

    async def close(self) -> None:
        """Let queued and running requests finish; cancelled, abort the runs instead, so
        that a bounded shutdown does not wait for compute nobody needs any more."""
        try:
            await self._batcher.close()
        except asyncio.CancelledError:
            self.runtime.terminate()
            raise


def _check_padding(model: str, signature: Signature, padding: Padding) -> None:
    """Padding works on axis 1 of batched tensors: each named one must have it, dynamic."""
    where = f"model '{model}' dynamic_batching.padding"
    if signature.max_batch_size == 0:
        raise RepositoryError(f"{where}: the model does not batch (max_batch_size 0)")
    for kind, names, specs in (
        ("input", padding.inputs, signature.inputs),
        ("output", padding.outputs, signature.outputs),
    ):
        by_name = {spec.name: spec for spec in specs}
        for name in names:
            spec = by_name.get(name)
            if spec is None:
                raise RepositoryError(
                    f"{where}: no {kind} '{name}'; the {kind}s are {sorted(by_name)}"
                )
            if not spec.dims or spec.dims[0] != -1:
                raise RepositoryError(
                    f"{where}: {kind} '{name}' has no variable length after the batch "
                    f"dimension (dims {list(spec.dims)})"
                )
            if kind == "input" and spec.datatype.name == "BYTES":
                raise RepositoryError(f"{where}: input '{name}' is BYTES; only numbers pad")


class OnnxVersions:
    """Builds versions for the repository: load the session, warm it up, wire the batcher.

    Called from a worker thread, since loading and warming up take a while."""

    MODEL_FILE = "model.onnx"

    def __init__(
        self, workers: int = 1, observers: Callable[[str, int], BatchObserver] | None = None
    ) -> None:
        self._workers = workers
        self._observers = observers  # one per version, when tracing

    def __call__(
        self, name: str, number: int, config: ModelConfig, directory: Path
    ) -> BatchedVersion:
        path = directory / self.MODEL_FILE
        if not path.is_file():
            raise RepositoryError(f"version {number} of model '{name}' has no {self.MODEL_FILE}")
        runtime = OnnxModel(path, config, workers=self._workers)
        runtime.warm_up(config.warmup)
        observer = self._observers(name, number) if self._observers is not None else None
        return BatchedVersion(name, number, config, runtime, observer=observer)
