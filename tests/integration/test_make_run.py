"""`make run` as users run it, on free ports: it stops both processes and exits non-zero
when the server cannot start, two can run side by side, and SIGTERM stops everything.

make's own variables are cleared from the environment (this suite runs under `make test`),
so the inner make is the one a user starts; its prerequisites are already built."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import tritonclient.grpc as triton
from processes import ROOT, free_port

START_S = 120.0  # the server loads every default model
STOP_S = 60.0
CLEAN = ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")


@dataclass
class MakeRun:
    process: subprocess.Popen[str]
    grpc_port: int
    http_port: int


@contextlib.contextmanager
def make_run(grpc_port: int, http_port: int) -> Iterator[MakeRun]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    command = [
        *("make", "-s", "run", f"GRPC_PORT={grpc_port}", f"HTTP_PORT={http_port}"),
        *("METRICS_PORT=0", "ADMIN_PORT=0"),
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own group, as a terminal would give it
    )
    try:
        yield MakeRun(process, grpc_port, http_port)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until_serving(run: MakeRun) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert run.process.poll() is None, f"make run exited {run.process.returncode}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{run.http_port}/v2/health/ready").status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("make run never became ready")


def test_a_taken_grpc_port_stops_make_run_with_a_failure_and_leaves_no_gateway() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        http_port = free_port()
        with make_run(port, http_port) as run:
            code = run.process.wait(timeout=START_S)
    assert code != 0
    assert not listening(http_port), "the gateway outlived the server"


@pytest.mark.slow
def test_two_make_runs_on_other_ports_both_serve_and_sigterm_stops_each_entirely() -> None:
    ports = [(free_port(), free_port()), (free_port(), free_port())]
    with make_run(*ports[0]) as first, make_run(*ports[1]) as second:
        for run in (first, second):
            wait_until_serving(run)
            with triton.InferenceServerClient(f"127.0.0.1:{run.grpc_port}") as client:
                assert client.is_server_ready()
        for run in (first, second):
            # To make alone, as a supervisor sends it: make passes it to the recipe, waits
            # for it (the server drains), then dies of the signal itself, as make does.
            run.process.send_signal(signal.SIGTERM)
            assert run.process.wait(timeout=STOP_S) in (0, -signal.SIGTERM)
            assert not listening(run.grpc_port) and not listening(run.http_port)
