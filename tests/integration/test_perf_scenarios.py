"""Every perf_analyzer scenario (loadtests/perf_analyzer/scenarios.py) runs against the real
server and gateway, at its first load level with short windows (`--smoke`), and writes a
CSV that parses. Pending scenarios must still fail, so that their mark goes when they pass.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import ROOT, ServerProcess

from loadtests import launch

PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"
pytestmark = pytest.mark.slow


def _scenarios() -> list[tuple[str, str]]:
    """(name, pending reason) from the runner's own list."""
    listed = subprocess.run(
        [sys.executable, "-m", "loadtests.perf_analyzer.scenarios", "--list"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        (line.split()[0], line.partition("[pending: ")[2].rstrip("]"))
        for line in listed.splitlines()
    ]


SCENARIOS = _scenarios()


@pytest.fixture(scope="module")
def smoke_run(
    default_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    assert PERF_ANALYZER.exists(), "run `make perf-analyzer` first"
    out = tmp_path_factory.mktemp("perf-scenarios")
    with launch.gateway(default_server.grpc_port) as gateway:
        subprocess.run(
            [
                sys.executable,
                *("-m", "loadtests.perf_analyzer.scenarios", "--smoke", "--out", str(out)),
                *("--grpc", default_server.grpc_address),
                *("--http", gateway.url.removeprefix("http://")),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=400,
        )
    yield out


def test_the_list_covers_every_model_and_mode() -> None:
    names = [name for name, _ in SCENARIOS]
    for model in ("digits", "minilm", "text_direction", "silero_vad"):
        assert any(name.startswith(model) for name in names), model
    for part in ("concurrency", "streaming", "request-rate", "http", "shapes", "batch"):
        assert any(part in name for name in names), part


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=pending))
        if pending
        else name
        for name, pending in SCENARIOS
    ],
)
def test_scenario_writes_a_csv(smoke_run: Path, name: str) -> None:
    log = (smoke_run / f"{name}.log").read_text()
    report = smoke_run / f"{name}.csv"
    assert report.exists(), log[-2000:]
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 1, log[-2000:]
    assert float(rows[0]["Inferences/Second"]) > 0
    assert int(rows[0]["p99 latency"]) >= int(rows[0]["p50 latency"]) > 0
    assert f"## {name}: 1 level(s)" in (smoke_run / "README.md").read_text()
