"""The README's example calls work as written, against a real server."""

from __future__ import annotations

import re
import subprocess
import sys

from processes import ROOT, ServerProcess

README_ADDRESS = "127.0.0.1:8001"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_tritonclient_example_runs(default_server: ServerProcess) -> None:
    blocks = [
        b
        for b in _python_blocks((ROOT / "README.md").read_text())
        if README_ADDRESS in b and "sentence_embedding" not in b  # test_gateway_docs runs it
    ]
    assert blocks, "README.md has no python example calling the server"
    for block in blocks:
        code = block.replace(README_ADDRESS, default_server.grpc_address)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[0] expected 0"
