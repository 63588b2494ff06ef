"""Builds pipeline versions for the repository (`platform: ensemble`), and refuses the ones
that cannot work: a step that cannot be built, a model that is not loaded, a tensor that
no earlier step produces or that does not fit where it goes.

Tensors are checked once, here: each stage reads pipeline tensors by name (its maps, or
the same name), and their datatypes and dims must fit what it declares (-1 fits any
size). The pipeline's declared inputs are its first tensors; every stage adds its outputs,
under new names only; the declared outputs must be produced. A model stage is checked
against the model version that serves when the pipeline loads, and the model must batch
at least as many rows as the pipeline, because a pipeline request goes to it whole.

Runs in the repository's loading thread, like every version factory; it only reads the
store (the models' signatures), and the repository loads pipelines after the models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from server.core.errors import InferenceError, RepositoryError
from server.core.model_config import ModelConfig, StepConfig
from server.core.models import ModelStore
from server.core.statistics import ModelStats
from server.core.tensors import Signature, TensorSpec
from server.execution.batcher import Batcher
from server.execution.pipeline import ModelStage, PipelineVersion, Stage, StepRunner, StepStage
from server.execution.steps.registry import build_step
from server.execution.steps.step import fits


class PipelineVersions:
    """The repository's factory for pipelines; `store` gives the repository itself."""

    def __init__(self, store: Callable[[], ModelStore]) -> None:
        self._store = store

    def __call__(self, name: str, number: int, config: ModelConfig, path: Path) -> PipelineVersion:
        """`path` is the version's directory, where the steps find the files they name (a
        new tokenizer is a new version)."""
        if config.inputs is None or config.outputs is None:
            raise RepositoryError(f"pipeline '{name}' must declare its inputs and outputs")
        signature = Signature(config.max_batch_size, config.inputs, config.outputs)
        tensors = {spec.name: spec for spec in config.inputs}
        stages: list[Stage] = []
        for step in config.steps:
            try:
                stage, produced = self._stage(name, config, step, tensors, path)
            except Exception as exc:  # a user's step may raise anything while it is built
                raise RepositoryError(
                    f"pipeline '{name}' step '{step.name}': {_reason(exc)}"
                ) from exc
            stages.append(stage)
            tensors.update(produced)
        try:
            _check_outputs(config.outputs, tensors)
        except ValueError as exc:
            raise RepositoryError(f"pipeline '{name}': {exc}") from exc
        return PipelineVersion(name, number, config, signature, tuple(stages))

    def _stage(
        self,
        pipeline: str,
        config: ModelConfig,
        step: StepConfig,
        tensors: Mapping[str, TensorSpec],
        directory: Path,
    ) -> tuple[Stage, dict[str, TensorSpec]]:
        if step.kind == "model":
            return self._model_stage(config, step, tensors)
        built = build_step(step, directory)
        reads = _reads(step, built.inputs, set(), tensors)
        outputs = built.bind({own: _renamed(tensors[theirs], own) for own, theirs in reads.items()})
        writes = _writes(step, outputs, tensors)
        specs = [outputs[own] for own in writes]
        stats = ModelStats()
        batcher = Batcher(
            f"{pipeline}/{step.name}",
            StepRunner(f"{pipeline}/{step.name}", built, specs),
            config.max_batch_size,
            config.batching,
            config.instances,
            stats,
        )
        stage = StepStage(
            step.name,
            tuple(reads.items()),
            tuple(writes.items()),
            tuple(spec.datatype for spec in specs),
            batcher,
            stats,
        )
        return stage, {theirs: _renamed(outputs[own], theirs) for own, theirs in writes.items()}

    def _model_stage(
        self, config: ModelConfig, step: StepConfig, tensors: Mapping[str, TensorSpec]
    ) -> tuple[Stage, dict[str, TensorSpec]]:
        store = self._store()
        served = store.resolve(step.target, step.version)
        model = f"model '{step.target}'"
        if served.config.steps:
            raise ValueError(f"{model} is a pipeline; a pipeline's steps cannot be pipelines")
        signature = served.signature
        if signature.max_batch_size < config.max_batch_size:
            raise ValueError(
                f"{model} takes at most {signature.max_batch_size} rows (max_batch_size), "
                f"fewer than the pipeline's {config.max_batch_size}"
            )
        specs = {spec.name: spec for spec in signature.inputs}
        optional = {spec.name for spec in signature.inputs if spec.optional}
        reads = _reads(step, tuple(specs), optional, tensors)
        for own, theirs in reads.items():
            want, have = specs[own], tensors[theirs]
            if want.datatype is not have.datatype or not fits(want.dims, have.dims):
                raise ValueError(
                    f"{model} input '{own}' is {_describe(want)}, but tensor '{theirs}' is "
                    f"{_describe(have)}"
                )
        outputs = {spec.name: spec for spec in signature.outputs}
        if step.output_map:
            _known("output_map", step.output_map, outputs)
            outputs = {own: outputs[own] for own in step.output_map}
        writes = _writes(step, outputs, tensors)
        stage = ModelStage(
            step.name,
            step.target,
            step.version,
            tuple((own, theirs, specs[own].datatype) for own, theirs in reads.items()),
            tuple(writes.items()),
            store,
        )
        return stage, {theirs: _renamed(outputs[own], theirs) for own, theirs in writes.items()}


def _reads(
    step: StepConfig,
    inputs: Iterable[str],
    optional: set[str],
    tensors: Mapping[str, TensorSpec],
) -> dict[str, str]:
    """The stage's input -> the pipeline tensor it reads (optional ones only if present)."""
    names = tuple(inputs)
    _known("input_map", step.input_map, names)
    reads = {}
    for own in names:
        theirs = step.input_map.get(own, own)
        if theirs in tensors:
            reads[own] = theirs
        elif own not in optional:
            raise ValueError(
                f"input '{own}' reads tensor '{theirs}', which neither the pipeline's inputs "
                f"nor an earlier step provide; there are {sorted(tensors)}"
            )
    return reads


def _writes(
    step: StepConfig, outputs: Mapping[str, TensorSpec], tensors: Mapping[str, TensorSpec]
) -> dict[str, str]:
    """The stage's output -> the pipeline tensor it writes, a name not taken yet."""
    _known("output_map", step.output_map, outputs)
    writes = {own: step.output_map.get(own, own) for own in outputs}
    taken = sorted(set(writes.values()) & set(tensors))
    if taken:
        raise ValueError(
            f"writes tensor(s) {taken}, which the pipeline already has; map the outputs to "
            "new names (output_map)"
        )
    return writes


def _known(key: str, mapping: Mapping[str, str], names: Iterable[str]) -> None:
    allowed = set(names)
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ValueError(f"{key} names {unknown}, which the step does not have: {sorted(allowed)}")


def _check_outputs(outputs: Iterable[TensorSpec], tensors: Mapping[str, TensorSpec]) -> None:
    for spec in outputs:
        produced = tensors.get(spec.name)
        if produced is None:
            raise ValueError(
                f"output '{spec.name}' is not produced by any step; there are {sorted(tensors)}"
            )
        if produced.datatype is not spec.datatype or not fits(spec.dims, produced.dims):
            raise ValueError(
                f"output '{spec.name}' is declared {_describe(spec)}, but its step produces "
                f"{_describe(produced)}"
            )


def _renamed(spec: TensorSpec, name: str) -> TensorSpec:
    return TensorSpec(name, spec.datatype, spec.dims, spec.optional)


def _describe(spec: TensorSpec) -> str:
    return f"{spec.datatype.name} {list(spec.dims)}"


def _reason(error: Exception) -> str:
    if isinstance(error, InferenceError):
        return error.message
    if isinstance(error, ValueError | TypeError):
        return str(error)
    return repr(error)
