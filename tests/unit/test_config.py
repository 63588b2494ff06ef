"""`config.yaml` parsing: defaults, a full example, and the exact words of each refusal."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from server.core import datatypes
from server.core.errors import RepositoryError
from server.core.model_config import (
    BatchingConfig,
    Deprecation,
    ModelConfig,
    Padding,
    VersionPolicy,
    WarmupInput,
)
from server.core.tensors import TensorSpec
from server.repository.config import load_config

ALLOWED_TOP = (
    "['class_labels', 'deprecated', 'dynamic_batching', 'execution', 'inputs', 'instances', "
    "'labels', 'max_batch_size', 'outputs', 'payload_logging', 'platform', 'steps', "
    "'threads', 'version_policy', 'warmup']"
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
  padding: {inputs: {m: 0}, outputs: [y], bucket: 8}
warmup:
  - {name: sr, shape: [], value: 16000}
  - {name: x}
labels: {stable: 3, canary: 1}
deprecated:
  - {version: 1, sunset: 2027-06-30, replacement: stable}
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
            max_queue_delay_us=500,
            preferred_batch_sizes=(4, 16),
            max_queue_size=64,
            padding=Padding({"m": 0.0}, ("y",), 8),
        ),
        warmup=(WarmupInput("sr", (), 16000.0), WarmupInput("x", None, 0.0)),
        execution="thread",
        labels={"stable": 3, "canary": 1},
        deprecated={
            1: Deprecation(
                sunset=datetime.datetime(2027, 6, 30, tzinfo=datetime.UTC),
                replacement="stable",
                link="/v2/models/mymodel/versions/stable",
            )
        },
    )


@pytest.mark.parametrize(
    ("sunset", "expected"),
    [
        pytest.param("2027-06-30", datetime.datetime(2027, 6, 30, tzinfo=datetime.UTC), id="date"),
        pytest.param(
            "2027-06-30T12:30:00",
            datetime.datetime(2027, 6, 30, 12, 30, tzinfo=datetime.UTC),
            id="timestamp without a zone",
        ),
        pytest.param(
            "2027-06-30T12:30:00+02:00",
            datetime.datetime(2027, 6, 30, 10, 30, tzinfo=datetime.UTC),
            id="timestamp with a zone",
        ),
    ],
)
def test_a_sunset_is_an_aware_utc_instant(
    tmp_path: Path, sunset: str, expected: datetime.datetime
) -> None:
    text = f"""
deprecated:
  - {{version: 2, sunset: {sunset}, replacement: 3, link: "https://example.com/m"}}
"""
    [(version, deprecation)] = load_config(_model_dir(tmp_path, text)).deprecated.items()
    assert version == 2
    assert deprecation.sunset == expected
    assert deprecation.sunset.utcoffset() is not None
    assert (deprecation.replacement, deprecation.link) == ("3", "https://example.com/m")


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
            "['max_queue_delay_us', 'max_queue_size', 'padding', 'preferred_batch_sizes']",
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
            "platform must be one of ['onnxruntime_onnx', 'ensemble'], got 'tensorflow'",
            id="platform",
        ),
        pytest.param(
            "max_batch_size: -1\n",
            "max_batch_size must be a non-negative integer, got -1",
            id="negative max_batch_size",
        ),
        pytest.param(
            "max_batch_size: true\n",
            "max_batch_size must be an integer, got True",
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
            "dynamic_batching.max_queue_delay_us must be an integer, got 1.5",
            id="fractional delay",
        ),
        pytest.param(
            "dynamic_batching: {max_queue_size: -1}\n",
            "dynamic_batching.max_queue_size must be a non-negative integer, got -1",
            id="negative queue",
        ),
        pytest.param(
            "dynamic_batching: {padding: {outputs: [y]}}\n",
            "every entry of dynamic_batching.padding needs 'inputs'; got {'outputs': ['y']}",
            id="padding without inputs",
        ),
        pytest.param(
            "dynamic_batching: {padding: {inputs: [ids]}}\n",
            "dynamic_batching.padding.inputs must map each padded input to its pad value",
            id="padding inputs a list",
        ),
        pytest.param(
            "dynamic_batching: {padding: {inputs: {ids: pad}}}\n",
            "dynamic_batching.padding.inputs.ids must be a number, got 'pad'",
            id="padding value not a number",
        ),
        pytest.param(
            "dynamic_batching: {padding: {inputs: {ids: 0}, outputs: y}}\n",
            "dynamic_batching.padding.outputs must be a list of output names, got 'y'",
            id="padding outputs not a list",
        ),
        pytest.param(
            "dynamic_batching: {padding: {inputs: {ids: 0}, bucket: 0}}\n",
            "dynamic_batching.padding.bucket must be at least 1",
            id="padding bucket zero",
        ),
        pytest.param(
            "dynamic_batching: {padding: {inputs: {ids: 0}, bucket: '8'}}\n",
            "dynamic_batching.padding.bucket must be an integer, got '8'",
            id="padding bucket a string",
        ),
        pytest.param("warmup: {name: x}\n", "warmup must be a list", id="warmup not a list"),
        pytest.param(
            "labels: [stable]\n", "labels must be a mapping of label to version", id="labels list"
        ),
        pytest.param(
            "labels: {'7': 1}\n",
            "labels: '7' must start with a letter and hold only letters, digits, '_', '.' and "
            "'-' (digits alone name versions)",
            id="label of digits",
        ),
        pytest.param(
            "labels: {stable: -1}\n",
            "labels.stable must be a non-negative integer, got -1",
            id="label negative",
        ),
        pytest.param(
            "deprecated: {version: 1}\n", "deprecated must be a list", id="deprecated not a list"
        ),
        pytest.param(
            "deprecated: [{version: 1, sunset: 2027-06-30, replacement: 2, until: 3}]\n",
            "unknown key(s) in deprecated[0]: ['until']; allowed: "
            "['link', 'replacement', 'sunset', 'version']",
            id="deprecated unknown key",
        ),
        pytest.param(
            "deprecated: [{version: 1, sunset: soon, replacement: 2}]\n",
            "deprecated version 1: sunset must be a date (2027-06-30) or a timestamp, got 'soon'",
            id="sunset not a date",
        ),
        pytest.param(
            "deprecated: [{version: 1, sunset: 2027-06-30, replacement: stable}]\n",
            "deprecated version 1: replacement 'stable' is neither a version number nor one of "
            "the labels []",
            id="unknown replacement",
        ),
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
            "deprecated: [{version: 1, replacement: 2}]\n",
            "every entry of deprecated[0] needs 'sunset'; got {'version': 1, 'replacement': 2}",
        ),
        (
            "version_policy: {all: false}\n",
            "version_policy.latest must be an integer, got None",
        ),
    ],
)
def test_a_missing_required_key_is_named_with_where_it_is_missing(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _error(tmp_path, text) == message


# Every integer field takes YAML integers only: a string, a float or a boolean is refused,
# never converted (int("3"), int(3.9) == 3 and int(True) == 1 would all "work").
NOT_INTEGERS = [pytest.param('"3"', "'3'", id="string"), ("3.9", "3.9"), ("true", "True")]
INTEGER_FIELDS = [
    pytest.param("max_batch_size: {}\n", "max_batch_size", id="max_batch_size"),
    pytest.param("instances: {}\n", "instances", id="instances"),
    pytest.param("threads: {{intra_op: {}}}\n", "threads.intra_op", id="intra_op"),
    pytest.param("threads: {{inter_op: {}}}\n", "threads.inter_op", id="inter_op"),
    pytest.param("version_policy: {{latest: {}}}\n", "version_policy.latest", id="latest"),
    pytest.param(
        "version_policy: {{specific: [1, {}]}}\n", "version_policy.specific[1]", id="specific"
    ),
    pytest.param(
        "dynamic_batching: {{max_queue_delay_us: {}}}\n",
        "dynamic_batching.max_queue_delay_us",
        id="max_queue_delay_us",
    ),
    pytest.param(
        "dynamic_batching: {{max_queue_size: {}}}\n",
        "dynamic_batching.max_queue_size",
        id="max_queue_size",
    ),
    pytest.param(
        "dynamic_batching: {{preferred_batch_sizes: [{}, 4]}}\n",
        "dynamic_batching.preferred_batch_sizes[0]",
        id="preferred_batch_sizes",
    ),
    pytest.param(
        "inputs: [{{name: x, datatype: FP32, dims: [4, {}]}}]\n", "inputs['x'].dims[1]", id="dims"
    ),
    pytest.param(
        "outputs: [{{name: y, datatype: FP32, dims: [{}]}}]\n",
        "outputs['y'].dims[0]",
        id="out dims",
    ),
    pytest.param("warmup: [{{name: sr, shape: [{}]}}]\n", "warmup['sr'].shape[0]", id="warmup"),
    pytest.param("labels: {{stable: {}}}\n", "labels.stable", id="label"),
    pytest.param(
        "deprecated: [{{version: {}, sunset: 2027-06-30, replacement: 2}}]\n",
        "deprecated[0].version",
        id="deprecated version",
    ),
]


@pytest.mark.parametrize(("value", "shown"), NOT_INTEGERS)
@pytest.mark.parametrize(("template", "key"), INTEGER_FIELDS)
def test_integer_fields_refuse_strings_floats_and_booleans(
    tmp_path: Path, template: str, key: str, value: str, shown: str
) -> None:
    assert _error(tmp_path, template.format(value)) == f"{key} must be an integer, got {shown}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "inputs: [{name: x, datatype: FP32, dims: 3}]\n",
            "inputs['x'].dims must be a list of integers, got 3",
        ),
        (
            "dynamic_batching: {preferred_batch_sizes: 4}\n",
            "dynamic_batching.preferred_batch_sizes must be a list of integers, got 4",
        ),
        (
            "version_policy: {specific: 3}\n",
            "version_policy.specific must be a list of integers, got 3",
        ),
        (
            "warmup: [{name: sr, shape: 1}]\n",
            "warmup['sr'].shape must be a list of integers, got 1",
        ),
    ],
)
def test_integer_lists_must_be_lists(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message


def test_integer_values_are_kept_exactly(tmp_path: Path) -> None:
    text = """
max_batch_size: 8
inputs: [{name: x, datatype: FP32, dims: [-1, 3]}]
version_policy: {specific: [2]}
dynamic_batching: {preferred_batch_sizes: [2, 8], max_queue_delay_us: 0}
warmup: [{name: x, shape: [1, 1, 3]}]
"""
    config = load_config(_model_dir(tmp_path, text))
    assert config.max_batch_size == 8
    assert config.inputs is not None
    assert config.inputs[0].dims == (-1, 3)
    assert config.version_policy.specific == (2,)
    assert config.batching.preferred_batch_sizes == (2, 8)
    assert config.warmup[0].shape == (1, 1, 3)
    values = [config.max_batch_size, *config.inputs[0].dims, *config.warmup[0].shape]
    assert all(type(v) is int for v in values)


def test_a_max_queue_size_of_zero_is_accepted_as_unbounded(tmp_path: Path) -> None:
    config = load_config(_model_dir(tmp_path, "dynamic_batching: {max_queue_size: 0}\n"))
    assert config.batching.max_queue_size == 0


def test_a_version_deprecated_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "deprecated:\n"
        "  - {version: 1, sunset: 2030-01-01, replacement: 2}\n"
        "  - {version: 1, sunset: 2031-01-01, replacement: 3}\n"
    )
    with pytest.raises(
        RepositoryError, match=r"deprecated\[1\]: version 1 is listed more than once"
    ):
        load_config(tmp_path)
