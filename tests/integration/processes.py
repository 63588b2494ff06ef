"""Real processes for integration tests: the server, started as users start it.

Tests here talk to the server only over sockets, through real clients. They never import
the server's generated `inference` package: its messages share full names with
tritonclient's copy, and one process's protobuf descriptor pool cannot hold both.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    grpc_port: int
    start_line: dict[str, object]
    log_lines: list[str] = field(default_factory=list)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> list[dict[str, object]]:
        """The JSON log lines the server has written so far."""
        parsed = []
        for line in list(self.log_lines):
            with contextlib.suppress(json.JSONDecodeError):
                parsed.append(json.loads(line))
        return parsed


def _pump(stream: object, lines: list[str], found: queue.Queue[dict[str, object] | None]) -> None:
    """Collect every line; hand over the start-up line when it appears."""
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        if '"event": "listening"' in line:
            found.put(json.loads(line))
    found.put(None)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released) for a process that needs
    its port on the command line, such as a replica that binds it again on restart."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[str], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def start_server(
    model_repository: Path, *extra_args: str, grpc_port: int = 0
) -> Iterator[ServerProcess]:
    """Run `python -m server` on an ephemeral port (or `grpc_port`, to restart a server
    where its clients expect it); stop it when the block ends."""
    command = [
        sys.executable,
        "-m",
        "server",
        "--model-repository",
        str(model_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",  # every test server on its own free port; the start line names it
        "0",
        *extra_args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    found: queue.Queue[dict[str, object] | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines, found), daemon=True).start()
    try:
        try:
            start = found.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            start = None
        if start is None:
            raise RuntimeError("server did not start:\n" + "".join(lines[-50:]))
        yield ServerProcess(process, int(start["grpc_port"]), start, lines)  # type: ignore[call-overload]
    finally:
        stop_process(process)
