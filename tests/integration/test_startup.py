"""Start-up: what a server refuses to start with, what it starts with, and which models.

A start-up problem exits with status 2 and one JSON log line, `"event": "startup_failed"`,
whose message names the problem (docs/operations.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from processes import ROOT, ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
X = np.array([[1.0, 2.0]], np.float32)
EXIT_TIMEOUT_S = 60.0


def run_to_exit(*args: str) -> tuple[int, list[dict[str, object]]]:
    """Run `python -m server ARGS` on 127.0.0.1 until it exits; its code and JSON lines."""
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", *args]
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=EXIT_TIMEOUT_S,
        check=False,
    )
    lines = []
    for line in done.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            lines.append({"unparsed": line})
    return done.returncode, lines


def failure(lines: list[dict[str, object]]) -> str:
    """The message of the one start-up failure line."""
    failed = [line for line in lines if line.get("event") == "startup_failed"]
    assert len(failed) == 1, lines
    assert failed[0]["level"] == "ERROR"
    return str(failed[0]["message"])


@pytest.fixture
def repository(
    tmp_path: Path, write_model: WriteModel, add_constant_model: Callable[[float], bytes]
) -> Path:
    root = tmp_path / "models"
    for name, constant in (("a", 1.0), ("b", 2.0), ("c", 3.0)):
        write_model(root, name, {1: add_constant_model(constant)}, "max_batch_size: 4\n")
    return root


def infer(address: str, model: str) -> float:
    """One request on a connection of its own; the constant the model added."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        request = service_pb2.ModelInferRequest(model_name=model)
        request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        request.raw_input_contents.append(X.tobytes())
        reply = service_pb2_grpc.GRPCInferenceServiceStub(ch).ModelInfer(request, timeout=30)
        return float(np.frombuffer(reply.raw_output_contents[0], np.float32)[0] - X[0, 0])


# --- refused at start ------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_missing_repository_is_a_startup_error(tmp_path: Path, workers: str) -> None:
    missing = tmp_path / "nonexistent"
    code, lines = run_to_exit(
        "--model-repository", str(missing), "--grpc-port", "0", "--workers", workers
    )
    assert code == 2
    assert failure(lines) == f"--model-repository {str(missing)!r} does not exist"
    assert not any(line.get("event") == "listening" for line in lines)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_repository_that_is_a_file_is_a_startup_error(tmp_path: Path, workers: str) -> None:
    path = tmp_path / "models.txt"
    path.write_text("not a directory\n")
    code, lines = run_to_exit(
        "--model-repository", str(path), "--grpc-port", "0", "--workers", workers
    )
    assert code == 2
    assert failure(lines) == f"--model-repository {str(path)!r} is not a directory"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_worker_that_fails_at_start_up_is_a_startup_error(
    tmp_path: Path, repository: Path, workers: str
) -> None:
    """A bad --api-keys-file fails in each worker, after the supervisor's own checks: the
    supervisor stops the others and exits 2, as a lone server does, not 1."""
    keys = tmp_path / "keys.yaml"
    keys.write_text("garbage: [\n")
    code, lines = run_to_exit(
        "--model-repository", str(repository), "--grpc-port", "0", "--metrics-port", "0",
        "--api-keys-file", str(keys), "--workers", workers,
    )  # fmt: skip
    assert code == 2, lines
    if workers == "1":
        assert failure(lines).startswith("not valid YAML")
    else:  # each worker that got that far says why, and the supervisor sums up once
        failed = [line for line in lines if line.get("event") == "startup_failed"]
        assert all(line["level"] == "ERROR" for line in failed), lines
        by_workers = [line for line in failed if isinstance(line.get("worker"), int)]
        assert by_workers, lines
        assert all(str(line["message"]).startswith("not valid YAML") for line in by_workers)
        [summary] = [line for line in failed if not isinstance(line.get("worker"), int)]
        assert summary["message"] == "a worker failed to start; stopped the others"
    assert not any(line.get("event") == "listening" for line in lines)


@pytest.fixture
def first_server(repository: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    with start_server(repository, "--workers", request.param) as server:
        yield server


@pytest.mark.parametrize("first_server", ["1", "2"], indirect=True, ids=["first-lone", "first-x2"])
@pytest.mark.parametrize("workers", ["1", "2"], ids=["second-lone", "second-x2"])
def test_a_second_server_on_a_served_port_fails_and_the_first_keeps_the_traffic(
    first_server: ServerProcess, repository: Path, workers: str
) -> None:
    port = str(first_server.grpc_port)
    code, lines = run_to_exit(
        "--model-repository", str(repository), "--grpc-port", port, "--workers", workers
    )
    assert code == 2
    message = failure(lines)
    assert message.startswith(f"cannot bind the gRPC port at 127.0.0.1:{port}: "), message
    assert not any(line.get("event") == "listening" for line in lines)
    # Every new connection still reaches the first server: nothing else listens there.
    client = triton.InferenceServerClient(first_server.grpc_address)
    try:
        before = _served(client, "a")
        assert [infer(first_server.grpc_address, "a") for _ in range(20)] == [1.0] * 20
        if first_server.start_line.get("workers") is None:  # one process: one count
            assert _served(client, "a") == before + 20
    finally:
        client.close()
    assert first_server.process.poll() is None


def _served(client: triton.InferenceServerClient, model: str) -> int:
    stats = client.get_inference_statistics(model).model_stats
    return sum(int(s.inference_stats.success.count) for s in stats)


# --- what is loaded at start -----------------------------------------------------------------


def index(client: triton.InferenceServerClient) -> dict[str, list[tuple[str, str, str]]]:
    found: dict[str, list[tuple[str, str, str]]] = {}
    for m in client.get_model_repository_index().models:
        found.setdefault(m.name, []).append((m.version, m.state, m.reason))
    return found


def test_a_symlink_out_of_the_root_is_refused_at_start(
    repository: Path, tmp_path: Path, add_constant_model: Callable[[float], bytes]
) -> None:
    outside = tmp_path / "elsewhere" / "escape"
    (outside / "1").mkdir(parents=True)
    (outside / "1" / "model.onnx").write_bytes(add_constant_model(100.0))
    (outside / "config.yaml").write_text("max_batch_size: 4\n")
    (repository / "escape").symlink_to(outside, target_is_directory=True)
    with start_server(repository) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            reason = "model 'escape' is a link that resolves outside the repository"
            assert index(client)["escape"] == [("", "UNAVAILABLE", reason)]
            assert str(tmp_path) not in json.dumps(
                [list(m.ListFields()) for m in client.get_model_repository_index().models],
                default=str,
            )
            assert not client.is_server_ready()  # an expected model is not ready
            assert not client.is_model_ready("escape")
            with pytest.raises(grpc.RpcError) as info:
                infer(server.grpc_address, "escape")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert info.value.details() == "model 'escape' has no ready version"  # type: ignore[attr-defined]
            assert infer(server.grpc_address, "a") == 1.0  # the others serve
        finally:
            client.close()
        refusals = [e for e in server.logs() if e.get("model") == "escape"]
        assert refusals, server.logs()
        assert refusals[0]["level"] == "WARNING"
        assert refusals[0]["reason"] == reason


def test_load_model_selects_the_models_loaded_at_start(repository: Path) -> None:
    with start_server(repository, "--load-model", "a", "--load-model", "c") as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            assert sorted(server.start_line["models"]) == ["a/1", "c/1"]  # type: ignore[arg-type]
            assert index(client) == {
                "a": [("1", "READY", "")],
                "b": [("", "UNAVAILABLE", "not loaded")],
                "c": [("1", "READY", "")],
            }
            assert client.is_server_ready()  # b is not expected until it is loaded
            assert not client.is_model_ready("b")
            client.load_model("b")
            assert infer(server.grpc_address, "b") == 2.0
            assert client.is_server_ready()
        finally:
            client.close()


def test_load_model_star_loads_everything(repository: Path) -> None:
    with start_server(repository, "--load-model", "*") as server:
        assert sorted(server.start_line["models"]) == ["a/1", "b/1", "c/1"]  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["none", "poll"])
def test_load_and_unload_are_refused_outside_explicit_mode(repository: Path, mode: str) -> None:
    with start_server(repository, "--model-control-mode", mode) as server:
        assert server.start_line["model_control_mode"] == mode
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            for action, call in (("load", client.load_model), ("unload", client.unload_model)):
                with pytest.raises(InferenceServerException) as info:
                    call("a")
                assert info.value.status() == "StatusCode.UNAVAILABLE"
                assert info.value.message() == (
                    f"model {action} is disabled in model control mode '{mode}'; start the "
                    "server with --model-control-mode explicit to use it"
                )
            assert infer(server.grpc_address, "a") == 1.0  # nothing was unloaded
            assert client.is_server_ready()
        finally:
            client.close()


def test_load_model_needs_explicit_mode(repository: Path) -> None:
    code, lines = run_to_exit(
        "--model-repository", str(repository), "--model-control-mode", "poll", "--load-model", "a"
    )
    assert code == 2  # argparse's usage error
    assert "--load-model needs --model-control-mode explicit" in json.dumps(lines)
