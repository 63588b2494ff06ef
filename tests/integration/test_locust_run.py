"""`make loadtest`'s entry point, `python -m loadtests.locust.run`, end to end.

The runner starts its own server and gateway on free ports, as `make loadtest` does, runs
every user class for a few seconds, and writes into a temporary results root. The test
checks what a performance engineer gets: the `<timestamp>/` folder, run.json, report.html,
the CSVs and the summary printed per user class. Then it checks that every process the
run started has stopped.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import ROOT

pytestmark = pytest.mark.slow

CLASSES = {
    "GrpcUser": "gRPC",
    "GrpcStreamUser": "gRPC-stream",
    "RestUser": "REST",
    "GrpcWebUser": "gRPC-web",
}
DURATION_S = 5
RUN_TIMEOUT_S = 75.0  # server start-up (up to 90 s on a very busy machine is a failure here)
STOP_TIMEOUT_S = 40.0  # the runner's own grace for locust (30 s), then the servers'
ROW = re.compile(
    r"^(?P<cls>\w+)\s+(?P<rps>[\d,.]+)\s+(?P<p50>[\d.]+)\s+(?P<p95>[\d.]+)\s+(?P<p99>[\d.]+)"
    r"\s+(?P<requests>[\d,]+)\s+(?P<failures>[\d,]+)$"
)


@dataclass
class Run:
    code: int
    output: str
    root: Path


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _pids_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (this test's own tmp path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A few seconds of four users (one per class, each paced at 20 requests/s) against a
    server and gateway that the runner starts and stops itself."""
    root = tmp_path_factory.mktemp("loadtest-results")
    command = [
        sys.executable,
        *("-m", "loadtests.locust.run", "--users", "4", "--spawn-rate", "4"),
        *("--duration", f"{DURATION_S}s", "--results-root", str(root)),
        *("--", "--user-rate", "20"),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the runner stop locust, the gateway and the server, which run in
        # sessions of their own; SIGKILL to its session only if that hangs.
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"the run did not end in {RUN_TIMEOUT_S:g} s:\n{output[-3000:]}")
    return Run(process.returncode, output, root)


def _folder(run: Run) -> Path:
    (folder,) = run.root.iterdir()
    return folder


def test_it_passes_and_writes_one_timestamped_folder(run: Run) -> None:
    assert run.code == 0, run.output[-3000:]
    assert "Traceback" not in run.output, run.output[-3000:]
    folder = _folder(run)
    assert re.fullmatch(r"\d{8}-\d{6}", folder.name), folder.name
    assert {path.name for path in folder.iterdir()} >= {
        "run.json",
        "report.html",
        "locust_stats.csv",
        "locust_failures.csv",
        "locust_exceptions.csv",
        "locust_stats_history.csv",
        "locust_summary.json",
        "locust_summary.txt",
    }


def test_run_json_says_what_ran_and_the_cpu_it_took(run: Run) -> None:
    report = json.loads((_folder(run) / "run.json").read_text())
    assert report["exit_code"] == 0
    command = report["command"]
    assert command[1:3] == ["-m", "locust"] and "--headless" in command
    assert command[command.index("-t") + 1] == f"{DURATION_S}s"
    assert command[command.index("-u") + 1] == "4"
    assert command[command.index("--csv") + 1] == str(_folder(run) / "locust")
    assert "--user-rate" in command  # the arguments after `--` reach locust
    assert DURATION_S - 1 < report["test_s"] < DURATION_S + 2
    assert set(report["cpu_s"]) == set(report["cores"]) == {"server", "gateway"}
    assert all(seconds > 0 for seconds in report["cpu_s"].values()), report


def test_reports_parse(run: Run) -> None:
    folder = _folder(run)
    with open(folder / "locust_stats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {row["Type"] for row in rows if row["Name"] != "Aggregated"} == set(CLASSES.values())
    assert rows[-1]["Name"] == "Aggregated" and int(rows[-1]["Request Count"]) > 0
    assert all(row["Failure Count"] == "0" for row in rows), rows
    for name in ("locust_failures.csv", "locust_exceptions.csv"):
        with open(folder / name, newline="") as f:
            assert list(csv.DictReader(f)) == [], name  # a header and no rows
    with open(folder / "locust_stats_history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert max(int(row["User Count"]) for row in history) == 4
    html = (folder / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html")
    assert all(request_type in html for request_type in CLASSES.values())


def test_the_printed_summary_has_every_class(run: Run) -> None:
    """req/s, p50/p95/p99 and failures per user class, as written to locust_summary.txt;
    then the client's, the server's and the gateway's CPU."""
    folder = _folder(run)
    lines = run.output.split(f"\nSummary, from {folder}:\n", 1)[1].splitlines()
    written = (folder / "locust_summary.txt").read_text().splitlines()
    assert lines[: len(written)] == written
    header = r"user class\s+req/s\s+p50 ms\s+p95 ms\s+p99 ms\s+requests\s+failures"
    assert re.fullmatch(header, lines[0]), lines[0]
    rows = {}
    for line in lines[1 : 1 + len(CLASSES)]:
        match = ROW.match(line)
        assert match, line
        rows[match["cls"]] = match
    assert set(rows) == set(CLASSES)
    for user_class, row in rows.items():
        assert _number(row["requests"]) > 0 and _number(row["rps"]) > 0, user_class
        assert 0 < float(row["p50"]) <= float(row["p95"]) <= float(row["p99"]), user_class
        assert _number(row["failures"]) == 0, user_class
    assert re.fullmatch(
        r"client CPU: [\d.]+ s = [\d.]+ cores, [\d.]+ ms per request", lines[1 + len(CLASSES)]
    )
    assert re.fullmatch(
        r"server CPU: [\d.]+ cores, gateway CPU: [\d.]+ cores", lines[2 + len(CLASSES)]
    )


def test_every_process_it_started_has_stopped(run: Run) -> None:
    """The server and the gateway no longer listen where the run said they would, and no
    process (locust, its workers) still names the results folder."""
    started = re.search(r"^server (\S+) \(x1\), gateway http://(\S+)$", run.output, re.M)
    assert started, run.output[:2000]
    for address in started.groups():
        assert not _listening(address), address
    assert _pids_mentioning(str(run.root)) == []
