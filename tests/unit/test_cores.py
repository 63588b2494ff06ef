"""The core count behind ONNX Runtime's default thread pools (server/execution/cores.py),
from cgroup v2 cpu.max files written here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server.execution.cores import available_cores, quota_cores


def _cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "cores"),
    [
        ("200000 100000\n", 2),  # a limit of 2 CPUs
        ("150000 100000\n", 2),  # 1.5 CPUs rounds up
        ("50000 100000\n", 1),  # half a CPU is still one thread
        ("max 100000\n", None),  # no limit
        ("", None),
        ("garbage\n", None),
        ("100000 0\n", None),
    ],
)
def test_quota_cores(tmp_path: Path, text: str, cores: int | None) -> None:
    assert quota_cores(_cpu_max(tmp_path, text)) == cores


def test_no_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert quota_cores(tmp_path / "missing") is None


def test_the_quota_caps_the_affinity_mask(tmp_path: Path) -> None:
    allowed = len(os.sched_getaffinity(0))
    assert available_cores(_cpu_max(tmp_path, "100000 100000\n")) == 1
    assert available_cores(_cpu_max(tmp_path, f"{allowed * 400000} 100000\n")) == allowed
    assert available_cores(_cpu_max(tmp_path, "max 100000\n")) == allowed
