"""`--model-control-mode poll`: the server follows its repository directory.

Model versions here answer y = x + constant, and every version has its own constant, so
an answer says which version computed it. Changes are made the way docs/operations.md
asks: new directories and files are written beside the repository and renamed into
place, so that a scan never sees half a file. Every wait is a bounded poll of what the
server reports, never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from processes import ServerProcess, start_server
from traffic import wait_until
from tritonclient.grpc import service_pb2, service_pb2_grpc

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
Build: TypeAlias = Callable[[float], bytes]
X = np.array([[0.5, -2.0]], np.float32)
POLL_S = "0.2"
APPLIED_S = 20.0  # how long a change may take to show: many scans, even on a loaded runner
BATCHED = "max_batch_size: 4\n"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("polled")


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Beside the repository, on the same file system, for renames into place."""
    return tmp_path_factory.mktemp("staging")


@pytest.fixture(scope="module")
def server(
    root: Path, write_model: WriteModel, add_constant_model: Build
) -> Iterator[ServerProcess]:
    write_model(root, "steady", {1: add_constant_model(1.0)}, BATCHED)
    with start_server(
        root, "--model-control-mode", "poll", "--repository-poll-secs", POLL_S
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    connected = triton.InferenceServerClient(server.grpc_address)
    yield connected
    connected.close()


@pytest.fixture(scope="module")
def stub(
    server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> service_pb2_grpc.GRPCInferenceServiceStub:
    return service_pb2_grpc.GRPCInferenceServiceStub(connect(server))


def infer(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str, version: str = ""
) -> tuple[str, float]:
    """The version that answered and the constant it added."""
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(X.tobytes())
    reply = stub.ModelInfer(request, timeout=30)
    added = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(1, 2) - X
    assert np.all(added == added[0, 0])
    return reply.model_version, float(added[0, 0])


def failure(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), str(error.details())  # type: ignore[attr-defined]
    raise AssertionError("the call succeeded")


def index(client: triton.InferenceServerClient, model: str) -> list[tuple[str, str, str]]:
    return [
        (m.version, m.state, m.reason)
        for m in client.get_model_repository_index().models
        if m.name == model
    ]


def answers(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str, version: str = ""
) -> Callable[[], tuple[str, float] | None]:
    """What `model` answers now, or None while it cannot."""

    def probe() -> tuple[str, float] | None:
        try:
            return infer(stub, model, version)
        except grpc.RpcError:
            return None

    return probe


def place_version(staging: Path, model_dir: Path, version: int, data: bytes) -> None:
    """Write `version/model.onnx` beside the repository, then rename it into place."""
    built = staging / f"{model_dir.name}-{version}"
    built.mkdir()
    (built / "model.onnx").write_bytes(data)
    os.rename(built, model_dir / str(version))


def place_model(
    staging: Path, root: Path, name: str, versions: dict[int, bytes], config: str
) -> None:
    """Write a whole model directory beside the repository, then rename it into place."""
    built = staging / name
    built.mkdir()
    (built / "config.yaml").write_text(config)
    for version, data in versions.items():
        (built / str(version)).mkdir()
        (built / str(version) / "model.onnx").write_bytes(data)
    os.rename(built, root / name)


def edit_config(staging: Path, model_dir: Path, config: str) -> None:
    edited = staging / f"{model_dir.name}-config.yaml"
    edited.write_text(config)
    os.replace(edited, model_dir / "config.yaml")


def served(stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str) -> int:
    return served_by(stub, model, "")


def served_by(stub: service_pb2_grpc.GRPCInferenceServiceStub, model: str, version: str) -> int:
    """Successful requests, by ModelStatistics: of one version, or of all."""
    request = service_pb2.ModelStatisticsRequest(name=model, version=version)
    stats = stub.ModelStatistics(request, timeout=30).model_stats
    return sum(int(s.inference_stats.success.count) for s in stats)


# --- models come, go and come back -----------------------------------------------------------


def test_a_model_added_is_served_removed_is_gone_and_back_starts_afresh(
    root: Path,
    staging: Path,
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    add_constant_model: Build,
) -> None:
    assert failure(lambda: infer(stub, "added"))[0] == grpc.StatusCode.NOT_FOUND

    place_model(staging, root, "added", {1: add_constant_model(10.0)}, BATCHED)
    assert wait_until(answers(stub, "added"), APPLIED_S, "the new model") == ("1", 10.0)
    assert client.is_model_ready("added")
    assert index(client, "added") == [("1", "READY", "")]
    for _ in range(4):
        infer(stub, "added")
    assert served(stub, "added") == 5

    shutil.rmtree(root / "added")
    wait_until(lambda: not index(client, "added"), APPLIED_S, "the model to leave the index")
    assert failure(lambda: infer(stub, "added")) == (
        grpc.StatusCode.NOT_FOUND,
        "unknown model 'added'",
    )
    assert not client.is_model_ready("added")
    assert client.is_server_ready()  # a removed model is no longer expected

    place_model(staging, root, "added", {1: add_constant_model(20.0)}, BATCHED)
    wait_until(lambda: client.is_model_ready("added"), APPLIED_S, "the model to come back")
    assert served(stub, "added") == 0  # a new model, new statistics
    assert infer(stub, "added") == ("1", 20.0)
    assert served(stub, "added") == 1
    assert infer(stub, "steady") == ("1", 1.0)  # the others were never touched


def test_versions_come_and_go(
    root: Path,
    staging: Path,
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    add_constant_model: Build,
) -> None:
    place_model(
        staging,
        root,
        "versions",
        {1: add_constant_model(1.0)},
        BATCHED + "version_policy: {all: true}\n",
    )
    wait_until(answers(stub, "versions"), APPLIED_S, "version 1")
    infer(stub, "versions", "1")
    assert served_by(stub, "versions", "1") == 2

    place_version(staging, root / "versions", 2, add_constant_model(2.0))
    wait_until(lambda: client.is_model_ready("versions", "2"), APPLIED_S, "version 2")
    assert index(client, "versions") == [("1", "READY", ""), ("2", "READY", "")]
    # Only what changed was rebuilt: version 1 kept its statistics.
    assert served_by(stub, "versions", "1") == 2
    assert infer(stub, "versions") == ("2", 2.0)
    assert infer(stub, "versions", "1") == ("1", 1.0)

    shutil.rmtree(root / "versions" / "1")
    wait_until(
        lambda: index(client, "versions") == [("2", "READY", "")], APPLIED_S, "version 1 to go"
    )
    assert failure(lambda: infer(stub, "versions", "1")) == (
        grpc.StatusCode.NOT_FOUND,
        "model 'versions' has no ready version 1; ready: [2]",
    )
    assert infer(stub, "versions") == ("2", 2.0)


def test_a_config_edit_is_applied(
    root: Path,
    staging: Path,
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    add_constant_model: Build,
) -> None:
    three = {n: add_constant_model(float(n)) for n in (1, 2, 3)}
    place_model(staging, root, "configured", three, BATCHED + "version_policy: {all: true}\n")
    wait_until(
        lambda: len(index(client, "configured")) == 3 and client.is_model_ready("configured"),
        APPLIED_S,
        "three versions",
    )

    edit_config(
        staging,
        root / "configured",
        BATCHED + "version_policy: {specific: [1, 2]}\nlabels: {stable: 1}\n",
    )
    wait_until(
        lambda: [v for v, _, _ in index(client, "configured")] == ["1", "2"],
        APPLIED_S,
        "the new version policy",
    )
    assert infer(stub, "configured") == ("2", 2.0)
    assert infer(stub, "configured", "stable") == ("1", 1.0)
    assert failure(lambda: infer(stub, "configured", "3"))[0] == grpc.StatusCode.NOT_FOUND

    # A config that does not parse keeps what serves, and says why.
    edit_config(staging, root / "configured", BATCHED + "version_polcy: {latest: 1}\n")
    wait_until(
        lambda: index(client, "configured")[0][:2] == ("", "UNAVAILABLE"),
        APPLIED_S,
        "the failed reload in the index",
    )
    entries = index(client, "configured")
    assert entries[0][2].startswith("reload failed, previous versions serve: ")
    assert "unknown key(s) in config: ['version_polcy']" in entries[0][2]
    assert entries[1:] == [("1", "READY", ""), ("2", "READY", "")]
    assert infer(stub, "configured", "stable") == ("1", 1.0)


def test_a_corrupt_new_version_keeps_the_old_one_serving(
    root: Path,
    staging: Path,
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
    add_constant_model: Build,
) -> None:
    place_model(staging, root, "guarded", {1: add_constant_model(5.0)}, BATCHED)
    wait_until(answers(stub, "guarded"), APPLIED_S, "version 1")

    place_version(staging, root / "guarded", 2, b"\x08\x09garbage, not an ONNX model")
    wait_until(
        lambda: index(client, "guarded")[0][:2] == ("", "UNAVAILABLE"),
        APPLIED_S,
        "the failed load in the index",
    )
    [(_, _, reason), *rest] = index(client, "guarded")
    assert reason.startswith(
        "reload failed, previous versions serve: version 2: ONNX Runtime could not load "
        "guarded/2/model.onnx"
    ), reason
    assert str(root) not in reason and str(staging) not in reason  # no server paths
    assert rest == [("1", "READY", "")]
    assert infer(stub, "guarded") == ("1", 5.0)
    assert client.is_model_ready("guarded")
    assert client.is_server_ready()

    # Fixed in place: the next scan loads it.
    shutil.rmtree(root / "guarded" / "2")
    place_version(staging, root / "guarded", 2, add_constant_model(6.0))
    assert wait_until(
        lambda: answers(stub, "guarded")() == ("2", 6.0), APPLIED_S, "the fixed version"
    )
    assert index(client, "guarded") == [("2", "READY", "")]


def test_a_broken_new_model_makes_the_server_unready_until_it_goes(
    root: Path,
    staging: Path,
    client: triton.InferenceServerClient,
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    assert client.is_server_ready()
    place_model(staging, root, "broken", {1: b"not onnx"}, BATCHED)
    wait_until(lambda: index(client, "broken"), APPLIED_S, "the broken model in the index")
    wait_until(lambda: not client.is_server_ready(), APPLIED_S, "readiness to drop")
    assert failure(lambda: infer(stub, "broken")) == (
        grpc.StatusCode.UNAVAILABLE,
        "model 'broken' has no ready version",
    )
    assert infer(stub, "steady") == ("1", 1.0)

    shutil.rmtree(root / "broken")
    wait_until(client.is_server_ready, APPLIED_S, "readiness to come back")
    assert not index(client, "broken")
