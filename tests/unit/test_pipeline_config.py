"""config.yaml for pipelines and class labels: what parses, and the exact words of each refusal.

What a step's options mean is checked when the pipeline is built (tests/unit/test_steps_*
and test_pipelines.py); here, only the shape of the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.errors import RepositoryError
from server.core.model_config import StepConfig
from server.repository.config import load_config

PIPELINE = """\
platform: ensemble
max_batch_size: 8
inputs: [{name: text, datatype: BYTES, dims: []}]
outputs: [{name: embedding, datatype: FP32, dims: [384]}]
"""


def _load(tmp_path: Path, text: str) -> object:
    model_dir = tmp_path / "pipe"
    model_dir.mkdir(exist_ok=True)
    (model_dir / "config.yaml").write_text(text)
    return load_config(model_dir)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RepositoryError) as info:
        _load(tmp_path, text)
    prefix = "pipe/config.yaml: "  # relative: errors show no server paths
    assert str(info.value).startswith(prefix)
    return str(info.value)[len(prefix) :]


def test_a_pipeline_parses_into_its_steps(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        PIPELINE
        + """\
steps:
  - step: tokenize
    options: {tokenizer: tokenizer.json, max_length: 8}
  - {model: minilm, version: 2, output_map: {last_hidden_state: states}}
  - {python: "my.steps:Pool", name: pool, input_map: {input: states}}
""",
    )
    assert config.platform == "ensemble"  # type: ignore[attr-defined]
    assert config.steps == (  # type: ignore[attr-defined]
        StepConfig(
            "tokenize", "step", "tokenize", "", {"tokenizer": "tokenizer.json", "max_length": 8}
        ),
        StepConfig("minilm", "model", "minilm", "2", {}, {}, {"last_hidden_state": "states"}),
        StepConfig("pool", "python", "my.steps:Pool", "", {}, {"input": "states"}, {}),
    )


def test_class_labels_are_read_from_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "labels.txt").write_text("cat\ndog\n")
    config = _load(tmp_path, "class_labels: {probabilities: labels.txt}\n")
    assert config.class_labels == {"probabilities": ("cat", "dog")}  # type: ignore[attr-defined]


STEP = "steps: [{step: softmax}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "platform: tensorrt\n",
            "platform must be one of ['onnxruntime_onnx', 'ensemble'], got 'tensorrt'",
        ),
        (STEP, "steps make a pipeline: they need platform: ensemble"),
        (PIPELINE, "a pipeline (platform ensemble) must declare its steps"),
        (
            PIPELINE.replace("max_batch_size: 8", "max_batch_size: 0") + STEP,
            "a pipeline (platform ensemble) batches its steps: max_batch_size must be at least "
            "1, got 0",
        ),
        (
            PIPELINE + STEP + "warmup: []\n",
            "warmup does not apply to a pipeline (platform ensemble)",
        ),
        (
            PIPELINE + "steps: [{step: softmax, model: minilm}]\n",
            "steps[0] needs exactly one of ['step', 'model', 'python']; got ['step', 'model']",
        ),
        (
            PIPELINE + "steps: [{steps: softmax}]\n",
            "unknown key(s) in steps[0]: ['steps']; allowed: ['input_map', 'model', 'name', "
            "'options', 'output_map', 'python', 'step', 'version']",
        ),
        (PIPELINE + "steps: [{step: ''}]\n", "steps[0].step must be a non-empty string, got ''"),
        (
            PIPELINE + "steps: [{step: softmax, version: 1}]\n",
            "steps[0].version applies to model steps only",
        ),
        (
            PIPELINE + "steps: [{model: m, options: {a: 1}}]\n",
            "steps[0].options apply to step and python steps, not models",
        ),
        (
            PIPELINE + "steps: [{model: m, version: new}]\n",
            "steps[0].version must be a version number, got 'new'",
        ),
        (
            PIPELINE + "steps: [{step: softmax, options: [1]}]\n",
            "steps[0].options must be a mapping, got [1]",
        ),
        (
            PIPELINE + "steps: [{step: softmax, input_map: {input: 3}}]\n",
            "steps[0].input_map must map tensor names to tensor names, got 'input': 3",
        ),
        (
            PIPELINE + "steps: [{step: softmax}, {step: softmax}]\n",
            "steps must have unique names; repeated: ['softmax'] (set name:)",
        ),
        (
            "class_labels: {p: labels.txt}\n",
            "class_labels.p: no file 'labels.txt' in the model directory",
        ),
        (
            "class_labels: {p: ../config.yaml}\n",
            "class_labels.p: '../config.yaml' must be a file in the model directory",
        ),
    ],
)
def test_refusals_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    assert _error(tmp_path, text) == message
