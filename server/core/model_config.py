"""A model's configuration as the domain sees it: frozen dataclasses, parsed elsewhere.

`server.repository.config` builds these from `config.yaml`; execution reads its settings
from them, and the faces report them (ModelConfig).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.core.tensors import TensorSpec

PLATFORM = "onnxruntime_onnx"
ENSEMBLE = "ensemble"  # a pipeline of steps and models, as Triton names its ensembles
PLATFORMS = (PLATFORM, ENSEMBLE)
EXECUTION_MODES = ("thread", "inline")
STEP_KINDS = ("step", "model", "python")  # a built-in step, a model, a user's Python class
PADDING_BUCKET = 16  # the default Padding.bucket


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """Which versions to load: the newest `latest`, every one, or `specific` ones."""

    latest: int | None = 1
    all: bool = False
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


@dataclass(frozen=True, slots=True)
class WarmupInput:
    """The tensor fed to one input at load time: `shape` (with the batch dimension) of `value`."""

    name: str
    shape: tuple[int, ...] | None = None
    value: float = 0


@dataclass(frozen=True, slots=True)
class Padding:
    """Sequences of different lengths share a batch, padded to its longest along axis 1.

    Without it only requests of equal shapes batch, and a model fed by clients that pad to
    their own text's length runs one request at a time. `bucket` keeps a batch's lengths
    close: lengths that round up to the same multiple of it share a batch, so that a short
    text does not pay for a long one's compute."""

    inputs: Mapping[str, float]  # padded input -> its pad value (0 for ids and masks)
    outputs: tuple[str, ...]  # cut back to each request's own length on axis 1
    bucket: int = PADDING_BUCKET


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    padding: Padding | None = None


@dataclass(frozen=True, slots=True)
class Deprecation:
    """A version on its way out: served, with notice, until `sunset`; refused after it."""

    sunset: datetime.datetime  # aware, UTC
    replacement: str  # the version (or label) to move to
    link: str  # where the replacement is described; sent as the successor's Link


@dataclass(frozen=True, slots=True)
class ComposingModel:
    """A model a pipeline calls, as Triton's ensemble_scheduling lists its steps."""

    name: str
    version: int  # -1: the newest ready one (or a label, resolved per request)
    input_map: Mapping[str, str]
    output_map: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class StepConfig:
    """One step of a pipeline, as `config.yaml` declares it; execution builds and checks it.

    `input_map` and `output_map` pair the step's own tensor names with the pipeline's (as
    Triton's ensemble maps do); a step tensor that no map names keeps its name."""

    name: str  # unique in the pipeline; errors and statistics name the step by it
    kind: str  # one of STEP_KINDS
    target: str  # the built-in step's name, the model's name, or "module:Class"
    version: str = ""  # model steps: the model version; "" is the newest ready one
    options: Mapping[str, object] = field(default_factory=dict)  # read by the step itself
    input_map: Mapping[str, str] = field(default_factory=dict)  # step tensor -> pipeline's
    output_map: Mapping[str, str] = field(default_factory=dict)  # step tensor -> pipeline's


@dataclass(frozen=True, slots=True)
class PayloadLogging:
    """Log a sample of this model's requests: input names, datatypes, shapes and digests,
    and the values of outputs with at most `max_output_elements` elements (0: none)."""

    sample: float = 1.0  # fraction of requests, in (0, 1]
    max_output_elements: int = 0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    name: str
    platform: str = PLATFORM
    max_batch_size: int = 0
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    version_policy: VersionPolicy = field(default_factory=VersionPolicy)
    instances: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    warmup: tuple[WarmupInput, ...] = ()
    execution: str = "thread"
    labels: Mapping[str, int] = field(default_factory=dict)  # label -> version
    deprecated: Mapping[int, Deprecation] = field(default_factory=dict)  # by version
    steps: tuple[StepConfig, ...] = ()  # a pipeline's steps, in order (platform ensemble)
    # Class labels by output name, for the classification extension (Triton's
    # label_filename); `labels` would be version labels (stable, canary), as in DESIGN.md.
    class_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    payload_logging: PayloadLogging | None = None  # None: payloads are never logged

    def composing_models(self) -> list[ComposingModel]:
        """The model steps of a pipeline, in order; its built-in and Python steps are not
        models, so they are not listed (a client would look them up and find nothing)."""
        return [
            ComposingModel(
                step.target,
                int(step.version) if step.version.isdigit() else -1,
                step.input_map,
                step.output_map,
            )
            for step in self.steps
            if step.kind == "model"
        ]
