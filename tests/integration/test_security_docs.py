"""The README's "Secure it" recipe works as written: make a keys file with `new-key`, start
the server on it, and call with the key it printed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import tritonclient.grpc as triton
from processes import ROOT, start_server
from tritonclient.utils import InferenceServerException


def _secure_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Secure it", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    return block


def test_the_readme_recipe_makes_a_working_key(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    setup, _, serve = _secure_block().strip().rpartition("\n")
    assert "--api-keys-file keys.yaml" in serve
    script = setup.replace(".venv/bin/python", sys.executable)
    made = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("v2k_") and key not in (tmp_path / "keys.yaml").read_text()
    write_model(tmp_path / "models", "a", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    with start_server(
        tmp_path / "models", "--api-keys-file", str(tmp_path / "keys.yaml")
    ) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            assert client.is_server_live(headers={"authorization": f"Bearer {key}"})
            with pytest.raises(InferenceServerException):
                client.is_server_live()
        finally:
            client.close()
