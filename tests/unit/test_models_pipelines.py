"""The default repository's pipelines: each committed config parses, models/build.py knows
each one, and builds its version directory once (the files its steps read, or nothing)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from server.repository.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _load_build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("models_build", ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()
PIPELINES = sorted(
    p.parent.name
    for p in (ROOT / "models").glob("*/config.yaml")
    if load_config(p.parent).platform == "ensemble"
)


def test_build_knows_every_committed_pipeline() -> None:
    assert PIPELINES == ["digit_from_png", "sentence_embedding", "text_direction_from_image"]
    assert sorted(build.PIPELINES) == PIPELINES


@pytest.mark.parametrize("name", PIPELINES)
def test_a_pipeline_version_is_built_once_with_the_files_its_steps_read(
    tmp_path: Path, name: str
) -> None:
    written = build.build_pipeline(tmp_path, name)
    version = tmp_path / name / "1"
    assert version.is_dir() and written
    files = build.PIPELINES[name]
    assert sorted(p.name for p in version.iterdir()) == sorted(files)
    for filename, (dist, path) in files.items():
        assert (version / filename).read_bytes() == build.shipped_file(dist, path).read_bytes()
    assert build.build_pipeline(tmp_path, name) == []
    for step in load_config(ROOT / "models" / name).steps:
        for value in step.options.values():
            if isinstance(value, str) and value.endswith(".json"):
                assert value in files, f"{name}: step {step.name} reads {value}"
