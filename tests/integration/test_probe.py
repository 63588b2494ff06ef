"""`python -m server.probe`, the container's HEALTHCHECK, against real servers."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import ROOT, ServerProcess, start_server


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.probe", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture(scope="module")
def half_broken_server(
    tmp_path_factory: pytest.TempPathFactory,
    add_constant_model: Callable[[float], bytes],
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
) -> Iterator[ServerProcess]:
    """One model that loads and one that cannot: the server as a whole is not ready."""
    repository = tmp_path_factory.mktemp("repository")
    write_model(repository, "good", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    write_model(repository, "broken", {1: b"not an onnx file"}, "max_batch_size: 8\n")
    with start_server(repository) as server:
        yield server


@pytest.mark.parametrize("service", ["", "digits"], ids=repr)
def test_serving_exits_0_and_says_nothing(default_server: ServerProcess, service: str) -> None:
    result = _probe("--address", default_server.grpc_address, "--service", service)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_default_service_is_the_whole_server(default_server: ServerProcess) -> None:
    result = _probe("--address", default_server.grpc_address, "--timeout", "2")
    assert (result.returncode, result.stderr) == (0, "")


def test_not_serving_exits_1(half_broken_server: ServerProcess) -> None:
    address = half_broken_server.grpc_address
    assert _probe("--address", address, "--service", "good").returncode == 0
    result = _probe("--address", address, "--service", "")
    assert result.returncode == 1
    assert result.stderr == f"probe: {address} service '': NOT_SERVING\n"
    result = _probe("--address", address, "--service", "broken")
    assert result.stderr == f"probe: {address} service 'broken': NOT_SERVING\n"


def test_unknown_service_exits_1(default_server: ServerProcess) -> None:
    address = default_server.grpc_address
    result = _probe("--address", address, "--service", "no_such_model")
    assert (result.returncode, result.stderr) == (
        1,
        f"probe: {address} service 'no_such_model': NOT_FOUND\n",
    )


def test_nothing_listening_exits_1_with_one_line() -> None:
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        result = _probe("--address", address)
    assert result.returncode == 1
    assert result.stderr.startswith(f"probe: {address} service '': UNAVAILABLE: ")
    assert result.stderr.count("\n") == 1


def test_no_answer_within_the_timeout_exits_1() -> None:
    """A peer that accepts TCP connections but never speaks HTTP/2."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        result = _probe("--address", address, "--timeout", "0.5")
    assert result.returncode == 1
    assert result.stderr.startswith(f"probe: {address} service '': DEADLINE_EXCEEDED")
    assert result.stderr.count("\n") == 1
