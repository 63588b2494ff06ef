"""The version factory the repository is given: a config with steps is a pipeline, any
other an ONNX model."""

from __future__ import annotations

from pathlib import Path

from server.core.model_config import ModelConfig
from server.core.models import ServedModel
from server.execution.pipeline_factory import PipelineVersions
from server.execution.version import OnnxVersions


class Versions:
    def __init__(self, onnx: OnnxVersions, pipelines: PipelineVersions) -> None:
        self._onnx = onnx
        self._pipelines = pipelines

    def __call__(self, name: str, number: int, config: ModelConfig, path: Path) -> ServedModel:
        if config.steps:
            return self._pipelines(name, number, config, path)
        return self._onnx(name, number, config, path)
