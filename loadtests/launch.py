"""Server and gateway processes for the benchmarks and load tests: started as users start
them (`python -m server`, `python -m gateway run`), always stopped.

A server here is one or more processes listening on one port. Several processes share a
port through SO_REUSEPORT: the port is reserved first by a bound, non-listening socket,
which is how `python -m server --workers N` (server/supervisor.py) does it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Server:
    port: int
    pid: int = 0  # the first process's

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True, slots=True)
class Gateway:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_command(workers: int, repository: Path | str = "models", *flags: str) -> list[str]:
    """The real server, as `make run` starts it, on a port of its choosing."""
    return [
        sys.executable,
        *("-m", "server", "--model-repository", str(repository), "--host", "127.0.0.1"),
        *("--grpc-port", "0", "--metrics-port", "0", "--workers", str(workers), *flags),
    ]


def gateway_command(upstream_port: int) -> list[str]:
    """The Envoy gateway, as `make run` starts it (after `make gateway`), on free ports."""
    return [
        sys.executable,
        *("-m", "gateway", "run", "--listen-host", "127.0.0.1", "--listen-port", "0"),
        *("--admin-port", "0", "--upstream", f"127.0.0.1:{upstream_port}"),
    ]


def noop_command(port: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.noop_server", "--grpc-port", str(port)]


@contextlib.contextmanager
def real_server(workers: int, repository: Path | str = "models", *flags: str) -> Iterator[Server]:
    """The server, with extra `flags`."""
    with _processes(f"server x{workers}", [server_command(workers, repository, *flags)]) as started:
        yield Server(*started)


@contextlib.contextmanager
def server_in(root: Path, *flags: str) -> Iterator[Server]:
    """The server of the source tree `root` (another revision's checkout, to compare
    with), with only the flags every revision knows and `flags`."""
    command = [
        sys.executable,
        *("-m", "server", "--model-repository", "models", "--host", "127.0.0.1"),
        *("--grpc-port", "0", *flags),
    ]
    with _processes(f"server in {root}", [command], root=root) as started:
        yield Server(*started)


@contextlib.contextmanager
def gateway(upstream_port: int) -> Iterator[Gateway]:
    """The gateway in front of a server on `upstream_port`."""
    with _processes("gateway", [gateway_command(upstream_port)], GATEWAY_EVENT) as started:
        yield Gateway(*started)


@contextlib.contextmanager
def noop_server(processes: int) -> Iterator[Server]:
    """`processes` no-op servers; with more than one they share a reserved port."""
    if processes == 1:
        with _processes("noop x1", [noop_command(0)]) as started:
            yield Server(*started)
        return
    with (
        _reserved_port() as port,
        _processes(f"noop x{processes}", [noop_command(port)] * processes) as started,
    ):
        yield Server(*started)


@contextlib.contextmanager
def _reserved_port() -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class Event:
    """The JSON line a process prints once it listens, and where its port is in it."""

    name: str
    port_key: str


SERVER_EVENT = Event("listening", "grpc_port")
GATEWAY_EVENT = Event("gateway_listening", "http_port")


@contextlib.contextmanager
def _processes(
    label: str, commands: Sequence[list[str]], event: Event = SERVER_EVENT, root: Path = ROOT
) -> Iterator[tuple[int, int]]:
    """Start every command, wait for each one's "listening" line, stop them all on exit.

    Yields the first one's port and pid (they all listen on one port when there are
    several)."""
    started: list[subprocess.Popen[str]] = []
    try:
        ports = []
        for command in commands:
            process = subprocess.Popen(
                command,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            started.append(process)
            ports.append(_await_listening(label, process, event))
        yield ports[0], started[0].pid
    finally:
        for process in started:
            _stop(process)


def _await_listening(label: str, process: subprocess.Popen[str], event: Event) -> int:
    """The port from the JSON "listening" line; later output is drained and kept short."""
    marker = f'"event": "{event.name}"'
    found: queue.Queue[int | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            tail.append(line)
            if marker in line:
                found.put(int(json.loads(line)[event.port_key]))
        found.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = found.get(timeout=START_TIMEOUT_S)
    except queue.Empty:
        port = None
    if port is None:
        raise RuntimeError(f"{label} did not start:\n" + "".join(tail))
    return port


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (graceful), then SIGKILL to the whole session if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                # Only our own session: the server and the workers it spawned.
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def noop_and_real(process_counts: Sequence[int]) -> Iterator[dict[tuple[str, int], Server]]:
    """The no-op server and the server, once per process count, keyed ("noop" or "server",
    processes): all started up front, so that none loads while another is measured."""
    with contextlib.ExitStack() as stack:
        started = {}
        for processes in process_counts:
            started["noop", processes] = stack.enter_context(noop_server(processes))
            started["server", processes] = stack.enter_context(real_server(processes))
        yield started


def listener_pid(port: int) -> int:
    """The process listening on a loopback port (ss, from iproute2)."""
    return listener_pids(port)[0]


def listener_pids(port: int) -> list[int]:
    """Every process listening on a loopback port: several share it with SO_REUSEPORT."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})
    if not found:
        raise RuntimeError(f"nothing listens on port {port}: {out!r}")
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
