"""A model's `config.yaml`, parsed once into the frozen `server.core.model_config` types.

Every key is optional; inputs and outputs fall back to what the ONNX file declares.
Unknown keys are an error, so that a typo never silently changes behaviour.

    platform: onnxruntime_onnx
    max_batch_size: 32          # 0: the model has no batch dimension
    inputs:  [{name: x, datatype: FP32, dims: [64]}]   # dims exclude the batch dim
    outputs: [{name: y, datatype: FP32, dims: [10]}]
    version_policy: {latest: 1} # or {all: true} or {specific: [1, 3]}
    instances: 1                # concurrent executions of one version
    execution: thread           # or inline: run on the event loop (tiny models only)
    threads: {intra_op: 0, inter_op: 1}   # 0: chosen from the core count
    dynamic_batching:
      max_queue_delay_us: 0     # how long a partial batch may wait for more
      preferred_batch_sizes: []
      max_queue_size: 1024      # beyond it: RESOURCE_EXHAUSTED; 0: unbounded
      padding:                  # sequences of different lengths share a batch (axis 1)
        inputs: {input_ids: 0, attention_mask: 0}   # padded to the batch's longest, with this value
        outputs: [last_hidden_state]                # cut back to each request's own length
        bucket: 16              # lengths rounding up to the same multiple of it share a batch
    warmup:                     # only for inputs whose default (zeros, dynamic dims 1) fails
      - {name: sr, shape: [], value: 16000}   # shape includes the batch dimension
    labels: {stable: 1, canary: 2}            # names a request may send as model_version
    deprecated:                 # versions on their way out (docs/operations.md)
      - version: 1
        sunset: 2027-06-30      # a date (midnight UTC) or a timestamp; refused from then on
        replacement: stable     # a version or a label
        link: https://example.com/models/digits   # optional; default: the replacement's path
    class_labels: {probabilities: labels.txt}   # for `classification: k`: one label a line

A pipeline (`platform: ensemble`, docs/pipelines.md) declares its inputs and outputs and
its steps instead of an ONNX file; the steps' options are checked when it is built:

    steps:
      - step: tokenize                  # or model: minilm, or python: package.module:Class
        name: tokenize                  # optional; defaults to the step, model or class name
        options: {tokenizer: tokenizer.json}
        input_map: {text: text}         # step tensor -> pipeline tensor; unnamed: same name
        output_map: {input_ids: ids}
      - {model: minilm, version: 1}     # version: optional, the newest ready one by default
    payload_logging:            # opt-in; never raw inputs (docs/observability.md)
      sample: 0.01              # fraction of requests logged, 0 < sample <= 1
      max_output_elements: 16   # outputs up to this many elements are logged in full; default 0
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import yaml

from server.core import datatypes
from server.core.errors import RepositoryError
from server.core.model_config import (
    ENSEMBLE,
    EXECUTION_MODES,
    PADDING_BUCKET,
    PLATFORM,
    PLATFORMS,
    STEP_KINDS,
    BatchingConfig,
    Deprecation,
    ModelConfig,
    Padding,
    PayloadLogging,
    StepConfig,
    VersionPolicy,
    WarmupInput,
)
from server.core.tensors import TensorSpec

CONFIG_FILE = "config.yaml"

_TOP_KEYS = {
    "platform",
    "max_batch_size",
    "inputs",
    "outputs",
    "version_policy",
    "instances",
    "threads",
    "dynamic_batching",
    "warmup",
    "execution",
    "labels",
    "deprecated",
    "steps",
    "class_labels",
    "payload_logging",
}
_LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
# What a pipeline does not have: an ONNX Runtime session to tune or warm up.
_NOT_FOR_PIPELINES = ("threads", "warmup", "execution")
_STEP_KEYS = {"name", "version", "options", "input_map", "output_map", *STEP_KINDS}


def load_config(model_dir: Path) -> ModelConfig:
    """Read `model_dir/config.yaml`; a missing file means all defaults.

    Errors name the file relative to the repository (`<model>/config.yaml`): clients see
    them, and the server's own paths are none of their business."""
    path = model_dir / CONFIG_FILE
    shown = f"{model_dir.name}/{CONFIG_FILE}"
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise RepositoryError(f"{shown}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise RepositoryError(f"{shown}: expected a mapping at the top level")
    try:
        return _parse(model_dir, raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise RepositoryError(f"{shown}: {exc}") from exc


def _parse(model_dir: Path, raw: dict[str, Any]) -> ModelConfig:
    _check_keys("config", raw, _TOP_KEYS)
    platform = str(raw.get("platform", PLATFORM))
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {list(PLATFORMS)}, got {platform!r}")
    if platform == ENSEMBLE:
        _check_pipeline(raw)
    elif "steps" in raw:
        raise ValueError(f"steps make a pipeline: they need platform: {ENSEMBLE}")
    max_batch_size = _non_negative("max_batch_size", raw.get("max_batch_size", 0))
    threads = raw.get("threads") or {}
    _check_keys("threads", threads, {"intra_op", "inter_op"})
    instances = _non_negative("instances", raw.get("instances", 1))
    if instances < 1:
        raise ValueError("instances must be at least 1")
    execution = str(raw.get("execution", "thread"))
    if execution not in EXECUTION_MODES:
        raise ValueError(f"execution must be one of {list(EXECUTION_MODES)}, got {execution!r}")
    if execution == "inline" and instances != 1:
        raise ValueError("execution: inline runs on the event loop, so instances must be 1")
    labels = _labels(raw.get("labels") or {})
    return ModelConfig(
        name=model_dir.name,
        platform=platform,
        max_batch_size=max_batch_size,
        inputs=_tensors("inputs", raw.get("inputs")),
        outputs=_tensors("outputs", raw.get("outputs")),
        version_policy=_version_policy(raw.get("version_policy") or {"latest": 1}),
        instances=instances,
        intra_op_threads=_non_negative("threads.intra_op", threads.get("intra_op", 0)),
        inter_op_threads=_non_negative("threads.inter_op", threads.get("inter_op", 1)),
        batching=_batching(raw.get("dynamic_batching") or {}),
        warmup=_warmup(raw.get("warmup") or []),
        execution=execution,
        labels=labels,
        deprecated=_deprecated(model_dir.name, raw.get("deprecated") or [], labels),
        steps=_steps(raw.get("steps") or []),
        class_labels=_class_labels(model_dir, raw.get("class_labels") or {}),
        payload_logging=_payload_logging(raw.get("payload_logging")),
    )


def _check_pipeline(raw: dict[str, Any]) -> None:
    """A pipeline has no ONNX file to read its interface from, and batches its steps."""
    for key in _NOT_FOR_PIPELINES:
        if key in raw:
            raise ValueError(f"{key} does not apply to a pipeline (platform {ENSEMBLE})")
    for key in ("inputs", "outputs", "steps"):
        if not raw.get(key):
            raise ValueError(f"a pipeline (platform {ENSEMBLE}) must declare its {key}")
    if not isinstance(raw.get("max_batch_size"), int) or raw["max_batch_size"] < 1:
        raise ValueError(
            f"a pipeline (platform {ENSEMBLE}) batches its steps: max_batch_size must be "
            f"at least 1, got {raw.get('max_batch_size')!r}"
        )


def _steps(raw: Any) -> tuple[StepConfig, ...]:
    if not isinstance(raw, list):
        raise TypeError("steps must be a list")
    steps = []
    for index, item in enumerate(raw):
        where = f"steps[{index}]"
        _check_keys(where, item, _STEP_KEYS)
        kinds = [kind for kind in STEP_KINDS if kind in item]
        if len(kinds) != 1:
            raise ValueError(f"{where} needs exactly one of {list(STEP_KINDS)}; got {kinds}")
        kind = kinds[0]
        target = item[kind]
        if not isinstance(target, str) or not target:
            raise ValueError(f"{where}.{kind} must be a non-empty string, got {target!r}")
        if kind != "model" and "version" in item:
            raise ValueError(f"{where}.version applies to model steps only")
        if kind == "model" and "options" in item:
            raise ValueError(f"{where}.options apply to step and python steps, not models")
        options = _mapping(f"{where}.options", item.get("options") or {})
        steps.append(
            StepConfig(
                name=str(item.get("name", target.rpartition(":")[2])),
                kind=kind,
                target=target,
                version=_step_version(where, item.get("version", "")),
                options=dict(options),
                input_map=_tensor_map(f"{where}.input_map", item.get("input_map") or {}),
                output_map=_tensor_map(f"{where}.output_map", item.get("output_map") or {}),
            )
        )
    names = [step.name for step in steps]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"steps must have unique names; repeated: {duplicates} (set name:)")
    return tuple(steps)


def _step_version(where: str, raw: Any) -> str:
    if raw == "":
        return ""
    if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
        raise ValueError(f"{where}.version must be a version number, got {raw!r}")
    return str(raw)


def _mapping(where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise TypeError(f"{where} must be a mapping, got {raw!r}")
    return raw


def _tensor_map(where: str, raw: Any) -> dict[str, str]:
    for key, value in _mapping(where, raw).items():
        if not isinstance(key, str) or not isinstance(value, str) or not value:
            raise ValueError(
                f"{where} must map tensor names to tensor names, got {key!r}: {value!r}"
            )
    return dict(raw)


def _class_labels(model_dir: Path, raw: Any) -> dict[str, tuple[str, ...]]:
    """`output: file`, a file in the model directory with one class label per line."""
    labels = {}
    for output, filename in _mapping("class_labels", raw).items():
        path = (model_dir / str(filename)).resolve()
        if model_dir.resolve() not in path.parents:
            raise ValueError(
                f"class_labels.{output}: {filename!r} must be a file in the model directory"
            )
        if not path.is_file():
            raise ValueError(f"class_labels.{output}: no file {filename!r} in the model directory")
        lines = tuple(path.read_text(encoding="utf-8").splitlines())
        if not lines:
            raise ValueError(f"class_labels.{output}: {filename!r} holds no labels")
        labels[str(output)] = lines
    return labels


def _check_keys(where: str, raw: Any, allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise TypeError(f"{where} must be a mapping")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {unknown}; allowed: {sorted(allowed)}")


def _require(where: str, item: dict[str, Any], key: str) -> None:
    if key not in item:
        raise ValueError(f"every entry of {where} needs '{key}'; got {item}")


def _integer(key: str, value: Any) -> int:
    """YAML integers only: "3", 3.9 and true are errors, never silently converted."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return value


def _non_negative(key: str, value: Any) -> int:
    if _integer(key, value) < 0:
        raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
    return int(value)


def _integers(key: str, raw: Any) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple):
        raise TypeError(f"{key} must be a list of integers, got {raw!r}")
    return tuple(_integer(f"{key}[{index}]", value) for index, value in enumerate(raw))


def _tensors(key: str, raw: Any) -> tuple[TensorSpec, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise TypeError(f"{key} must be a list")
    specs = []
    for item in raw:
        _check_keys(key, item, {"name", "datatype", "dims", "optional"})
        _require(key, item, "name")
        dtype = datatypes.BY_NAME.get(str(item.get("datatype")))
        if dtype is None:
            raise ValueError(
                f"{key}[{item.get('name')!r}].datatype must be one of {datatypes.NAMES}"
            )
        dims = _integers(f"{key}[{item['name']!r}].dims", item.get("dims", []))
        if any(d < -1 or d == 0 for d in dims):
            raise ValueError(f"{key}[{item['name']!r}].dims must be positive or -1")
        specs.append(TensorSpec(str(item["name"]), dtype, dims, bool(item.get("optional", False))))
    return tuple(specs)


def _version_policy(raw: Any) -> VersionPolicy:
    _check_keys("version_policy", raw, {"latest", "all", "specific"})
    if len(raw) != 1:
        raise ValueError("version_policy takes exactly one of latest, all, specific")
    if raw.get("all"):
        return VersionPolicy(latest=None, all=True)
    if "specific" in raw:
        versions = _integers("version_policy.specific", raw["specific"])
        if not versions:
            raise ValueError("version_policy.specific must list at least one version")
        return VersionPolicy(latest=None, specific=versions)
    latest = _non_negative("version_policy.latest", raw.get("latest"))
    if latest < 1:
        raise ValueError("version_policy.latest must be at least 1")
    return VersionPolicy(latest=latest)


def _batching(raw: Any) -> BatchingConfig:
    _check_keys(
        "dynamic_batching",
        raw,
        {"max_queue_delay_us", "preferred_batch_sizes", "max_queue_size", "padding"},
    )
    preferred = _integers(
        "dynamic_batching.preferred_batch_sizes", raw.get("preferred_batch_sizes", [])
    )
    if any(s < 1 for s in preferred):
        raise ValueError("dynamic_batching.preferred_batch_sizes must be positive")
    max_queue_size = _non_negative(
        "dynamic_batching.max_queue_size", raw.get("max_queue_size", 1024)
    )
    return BatchingConfig(
        max_queue_delay_us=_non_negative(
            "dynamic_batching.max_queue_delay_us", raw.get("max_queue_delay_us", 0)
        ),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_size=max_queue_size,
        padding=None if raw.get("padding") is None else _padding(raw["padding"]),
    )


def _padding(raw: Any) -> Padding:
    where = "dynamic_batching.padding"
    _check_keys(where, raw, {"inputs", "outputs", "bucket"})
    _require(where, raw, "inputs")
    inputs = raw["inputs"]
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError(f"{where}.inputs must map each padded input to its pad value")
    values = {}
    for name, value in inputs.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}.inputs.{name} must be a number, got {value!r}")
        values[str(name)] = float(value)
    outputs = raw.get("outputs", [])
    if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
        raise ValueError(f"{where}.outputs must be a list of output names, got {outputs!r}")
    bucket = _non_negative(f"{where}.bucket", raw.get("bucket", PADDING_BUCKET))
    if bucket < 1:
        raise ValueError(f"{where}.bucket must be at least 1")
    return Padding(values, tuple(outputs), bucket)


def _warmup(raw: Any) -> tuple[WarmupInput, ...]:
    if not isinstance(raw, list):
        raise TypeError("warmup must be a list")
    entries = []
    for item in raw:
        _check_keys("warmup", item, {"name", "shape", "value"})
        _require("warmup", item, "name")
        shape = item.get("shape")
        entries.append(
            WarmupInput(
                name=str(item["name"]),
                shape=None
                if shape is None
                else _integers(f"warmup[{item['name']!r}].shape", shape),
                value=float(item.get("value", 0)),
            )
        )
    return tuple(entries)


def _labels(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise TypeError("labels must be a mapping of label to version")
    labels = {}
    for label, version in raw.items():
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            raise ValueError(
                f"labels: {label!r} must start with a letter and hold only letters, digits, "
                "'_', '.' and '-' (digits alone name versions)"
            )
        labels[label] = _non_negative(f"labels.{label}", version)
    return labels


def _sunset(where: str, value: Any) -> datetime.datetime:
    """A YAML date means midnight UTC; a timestamp without a zone is UTC."""
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time(), tzinfo=datetime.UTC)
    raise ValueError(f"{where} must be a date (2027-06-30) or a timestamp, got {value!r}")


def _deprecated(name: str, raw: Any, labels: dict[str, int]) -> dict[int, Deprecation]:
    if not isinstance(raw, list):
        raise TypeError("deprecated must be a list")
    deprecated = {}
    for index, item in enumerate(raw):
        where = f"deprecated[{index}]"
        _check_keys(where, item, {"version", "sunset", "replacement", "link"})
        for key in ("version", "sunset", "replacement"):
            _require(where, item, key)
        version = _non_negative(f"{where}.version", item["version"])
        if version in deprecated:
            raise ValueError(f"{where}: version {version} is listed more than once")
        replacement = str(item["replacement"])
        if not (replacement.isdigit() or replacement in labels):
            raise ValueError(
                f"deprecated version {version}: replacement {replacement!r} is neither a "
                f"version number nor one of the labels {sorted(labels)}"
            )
        deprecated[version] = Deprecation(
            sunset=_sunset(f"deprecated version {version}: sunset", item["sunset"]),
            replacement=replacement,
            link=str(item.get("link") or f"/v2/models/{name}/versions/{replacement}"),
        )
    return deprecated


def _payload_logging(raw: Any) -> PayloadLogging | None:
    if raw is None:
        return None
    _check_keys("payload_logging", raw, {"sample", "max_output_elements"})
    sample = raw.get("sample", 1.0)
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 < sample <= 1:
        raise ValueError(f"payload_logging.sample must be a number in (0, 1], got {sample!r}")
    return PayloadLogging(
        sample=float(sample),
        max_output_elements=_non_negative(
            "payload_logging.max_output_elements", raw.get("max_output_elements", 0)
        ),
    )
