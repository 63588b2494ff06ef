"""Triton's perf_analyzer drives the server unchanged (it needs ModelConfig and statistics)."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
from processes import ROOT, ServerProcess

PERF_ANALYZER = ROOT / ".venv" / "bin" / "perf_analyzer"


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 8])
def test_perf_analyzer_measures_digits(
    default_server: ServerProcess, concurrency: int, tmp_path: Path
) -> None:
    assert PERF_ANALYZER.exists(), "run `make perf-analyzer` first"
    report = tmp_path / "report.csv"
    result = subprocess.run(
        [
            str(PERF_ANALYZER),
            "-m",
            "digits",
            "-i",
            "grpc",
            "-u",
            default_server.grpc_address,
            "-b",
            "1",
            "--concurrency-range",
            f"{concurrency}:{concurrency}",
            "--measurement-interval",
            "1000",
            # This test checks that perf_analyzer works against the server, not how steady the
            # machine is: any three windows count as stable.
            "--stability-percentage",
            "1000",
            "--max-trials",
            "3",
            "-f",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = list(csv.DictReader(report.open()))
    assert len(rows) == 1
    assert int(rows[0]["Concurrency"]) == concurrency
    assert float(rows[0]["Inferences/Second"]) > 0
