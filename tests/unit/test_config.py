"""`config.yaml` parsing: defaults, a full example, and the exact words of each refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import datatypes
from server.config import (
    BatchingConfig,
    ModelConfig,
    TensorSpec,
    VersionPolicy,
    WarmupInput,
    load_config,
)
from server.errors import RepositoryError

ALLOWED_TOP = (
    "['dynamic_batching', 'execution', 'inputs', 'instances', 'max_batch_size', 'outputs', "
    "'platform', 'threads', 'version_policy', 'warmup']"
)


def _model_dir(tmp_path: Path, text: str | None) -> Path:
    model_dir = tmp_path / "mymodel"
    model_dir.mkdir(parents=True)
    if text is not None:
        (model_dir / "config.yaml").write_text(text)
    return model_dir


def _error(tmp_path: Path, text: str) -> str:
    model_dir = _model_dir(tmp_path, text)
    with pytest.raises(RepositoryError) as failure:
        load_config(model_dir)
    prefix = f"{model_dir.name}/config.yaml: "
    message = str(failure.value)
    assert message.startswith(prefix)
    return message.removeprefix(prefix)


def test_a_missing_file_means_every_default(tmp_path: Path) -> None:
    assert load_config(_model_dir(tmp_path, None)) == ModelConfig(name="mymodel")
    assert load_config(_model_dir(tmp_path / "empty", "")) == ModelConfig(name="mymodel")


def test_the_full_example_parses(tmp_path: Path) -> None:
    text = """
platform: onnxruntime_onnx
max_batch_size: 32
inputs:
  - {name: x, datatype: FP32, dims: [64]}
  - {name: m, datatype: INT64, dims: [-1], optional: true}
outputs: [{name: y, datatype: FP32, dims: [10]}]
version_policy: {specific: [3, 1]}
instances: 2
execution: thread
threads: {intra_op: 2, inter_op: 1}
dynamic_batching:
  max_queue_delay_us: 500
  preferred_batch_sizes: [16, 4]
  max_queue_size: 64
warmup:
  - {name: sr, shape: [], value: 16000}
  - {name: x}
"""
    fp32, int64 = datatypes.BY_NAME["FP32"], datatypes.BY_NAME["INT64"]
    assert load_config(_model_dir(tmp_path, text)) == ModelConfig(
        name="mymodel",
        max_batch_size=32,
        inputs=(TensorSpec("x", fp32, (64,)), TensorSpec("m", int64, (-1,), optional=True)),
        outputs=(TensorSpec("y", fp32, (10,)),),
        version_policy=VersionPolicy(latest=None, specific=(3, 1)),
        instances=2,
        intra_op_threads=2,
        inter_op_threads=1,
        batching=BatchingConfig(
            max_queue_delay_us=500, preferred_batch_sizes=(4, 16), max_queue_size=64
        ),
        warmup=(WarmupInput("sr", (), 16000.0), WarmupInput("x", None, 0.0)),
        execution="thread",
    )


@pytest.mark.parametrize(
    ("policy", "available", "selected"),
    [
        (VersionPolicy(), [3, 1, 2], [3]),
        (VersionPolicy(latest=2), [3, 1, 2], [2, 3]),
        (VersionPolicy(latest=None, all=True), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy(latest=None, specific=(1, 3, 9)), [3, 1, 2], [1, 3]),
    ],
)
def test_version_policy_selects(
    policy: VersionPolicy, available: list[int], selected: list[int]
) -> None:
    assert policy.select(available) == selected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "max_batch: 8\n",
            f"unknown key(s) in config: ['max_batch']; allowed: {ALLOWED_TOP}",
            id="unknown top key",
        ),
        pytest.param(
            "dynamic_batching: {max_delay_us: 5}\n",
            "unknown key(s) in dynamic_batching: ['max_delay_us']; allowed: "
            "['max_queue_delay_us', 'max_queue_size', 'preferred_batch_sizes']",
            id="unknown batching key",
        ),
        pytest.param(
            "threads: {intra: 2}\n",
            "unknown key(s) in threads: ['intra']; allowed: ['inter_op', 'intra_op']",
            id="unknown threads key",
        ),
        pytest.param(
            "inputs: [{name: x, datatype: FP32, shape: [3]}]\n",
            "unknown key(s) in inputs: ['shape']; allowed: "
            "['datatype', 'dims', 'name', 'optional']",
            id="unknown tensor key",
        ),
        pytest.param(
            "inputs: [{name: x, datatype: FLOAT, dims: [3]}]\n",
            f"inputs['x'].datatype must be one of {datatypes.NAMES}",
            id="bad datatype",
        ),
        pytest.param(
            "outputs: [{name: y, datatype: TYPE_FP32, dims: [3]}]\n",
            f"outputs['y'].datatype must be one of {datatypes.NAMES}",
            id="config enum is not a datatype",
        ),
        pytest.param(
            "inputs: [{name: x, datatype: FP32, dims: [0]}]\n",
            "inputs['x'].dims must be positive or -1",
            id="zero dim",
        ),
        pytest.param("inputs: {name: x}\n", "inputs must be a list", id="inputs not a list"),
        pytest.param(
            "version_policy: {latest: 1, all: true}\n",
            "version_policy takes exactly one of latest, all, specific",
            id="two policies",
        ),
        pytest.param(
            "version_policy: {newest: 1}\n",
            "unknown key(s) in version_policy: ['newest']; allowed: ['all', 'latest', 'specific']",
            id="unknown policy",
        ),
        pytest.param(
            "version_policy: {latest: 0}\n",
            "version_policy.latest must be at least 1",
            id="latest zero",
        ),
        pytest.param(
            "version_policy: {latest: -2}\n",
            "version_policy.latest must be a non-negative integer, got -2",
            id="latest negative",
        ),
        pytest.param(
            "version_policy: {specific: []}\n",
            "version_policy.specific must list at least one version",
            id="specific empty",
        ),
        pytest.param(
            "version_policy: latest\n", "version_policy must be a mapping", id="policy scalar"
        ),
        pytest.param(
            "platform: tensorflow\n",
            "platform must be 'onnxruntime_onnx', got 'tensorflow'",
            id="platform",
        ),
        pytest.param(
            "max_batch_size: -1\n",
            "max_batch_size must be a non-negative integer, got -1",
            id="negative max_batch_size",
        ),
        pytest.param(
            "max_batch_size: true\n",
            "max_batch_size must be a non-negative integer, got True",
            id="bool max_batch_size",
        ),
        pytest.param("instances: 0\n", "instances must be at least 1", id="no instances"),
        pytest.param(
            "execution: process\n",
            "execution must be one of ['thread', 'inline'], got 'process'",
            id="execution mode",
        ),
        pytest.param(
            "execution: inline\ninstances: 2\n",
            "execution: inline runs on the event loop, so instances must be 1",
            id="inline instances",
        ),
        pytest.param(
            "dynamic_batching: {preferred_batch_sizes: [4, 0]}\n",
            "dynamic_batching.preferred_batch_sizes must be positive",
            id="preferred zero",
        ),
        pytest.param(
            "dynamic_batching: {max_queue_delay_us: 1.5}\n",
            "dynamic_batching.max_queue_delay_us must be a non-negative integer, got 1.5",
            id="fractional delay",
        ),
        pytest.param(
            "dynamic_batching: {max_queue_size: -1}\n",
            "dynamic_batching.max_queue_size must be a non-negative integer, got -1",
            id="negative queue",
        ),
        pytest.param("warmup: {name: x}\n", "warmup must be a list", id="warmup not a list"),
    ],
)
def test_refusals_name_the_key_and_what_is_allowed(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_the_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert _error(tmp_path, "- 1\n- 2\n") == "expected a mapping at the top level"


def test_invalid_yaml_is_reported_with_the_path(tmp_path: Path) -> None:
    assert _error(tmp_path, "max_batch_size: [1\n").startswith("not valid YAML: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "inputs: [{datatype: FP32, dims: [3]}]\n",
            "every entry of inputs needs 'name'; got {'datatype': 'FP32', 'dims': [3]}",
        ),
        ("warmup: [{value: 1}]\n", "every entry of warmup needs 'name'; got {'value': 1}"),
        (
            "version_policy: {all: false}\n",
            "version_policy.latest must be a non-negative integer, got None",
        ),
    ],
)
def test_a_missing_required_key_is_named_with_where_it_is_missing(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _error(tmp_path, text) == message


def test_a_max_queue_size_of_zero_is_accepted_as_unbounded(tmp_path: Path) -> None:
    config = load_config(_model_dir(tmp_path, "dynamic_batching: {max_queue_size: 0}\n"))
    assert config.batching.max_queue_size == 0
