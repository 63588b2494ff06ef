"""Versions, version policies, explicit load and unload, and failed loads.

Model `adder` version N answers x + N, so every answer says which version computed it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import ServerProcess, start_server
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
X = np.array([[0.5, -2.0]], np.float32)
BROKEN_ONNX = b"this is not an ONNX file"


def infer(client: triton.InferenceServerClient, model: str, version: str = "") -> tuple[str, float]:
    """The version that answered and the constant it added."""
    tensor = triton.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(X)
    result = client.infer(model, [tensor], model_version=version)
    added = result.as_numpy("y") - X
    assert np.all(added == added[0, 0])
    return result.get_response().model_version, float(added[0, 0])


def index(client: triton.InferenceServerClient, model: str) -> list[tuple[str, str, str]]:
    return [
        (m.version, m.state, m.reason)
        for m in client.get_model_repository_index().models
        if m.name == model
    ]


def status_of(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as info:
        call()
    return str(info.value.status()), str(info.value.message())


@pytest.fixture(scope="module")
def versions_root(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: WriteModel,
    add_constant_model: Callable[[float], bytes],
) -> Path:
    root = tmp_path_factory.mktemp("versions")
    three = {n: add_constant_model(n) for n in (1, 2, 3)}
    write_model(root, "adder", three, "max_batch_size: 4\nversion_policy: {all: true}\n")
    write_model(root, "adder_latest2", three, "max_batch_size: 4\nversion_policy: {latest: 2}\n")
    write_model(root, "adder_default", three, "max_batch_size: 4\n")
    write_model(
        root, "adder_specific", three, "max_batch_size: 4\nversion_policy: {specific: [1, 3]}\n"
    )
    write_model(root, "swap", {1: add_constant_model(1)}, "max_batch_size: 4\n")
    return root


@pytest.fixture(scope="module")
def versions_server(versions_root: Path) -> Iterator[ServerProcess]:
    with start_server(versions_root) as server:
        yield server


@pytest.fixture(scope="module")
def client(versions_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(versions_server.grpc_address)
    yield client
    client.close()


@pytest.fixture(scope="module")
def health(
    versions_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(connect(versions_server))


def serving_status(health: health_pb2_grpc.HealthStub, service: str) -> int:
    return health.Check(health_pb2.HealthCheckRequest(service=service)).status


# --- versions -------------------------------------------------------------------------------


def test_newest_version_wins_without_a_version(client: triton.InferenceServerClient) -> None:
    assert infer(client, "adder") == ("3", 3.0)


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_a_specific_version_can_be_chosen(
    client: triton.InferenceServerClient, version: str
) -> None:
    assert infer(client, "adder", version) == (version, float(version))
    assert client.is_model_ready("adder", version)


def test_all_versions_are_listed(client: triton.InferenceServerClient) -> None:
    assert list(client.get_model_metadata("adder").versions) == ["1", "2", "3"]
    assert index(client, "adder") == [("1", "READY", ""), ("2", "READY", ""), ("3", "READY", "")]


def test_a_version_that_is_not_loaded_is_not_found(client: triton.InferenceServerClient) -> None:
    status, message = status_of(lambda: infer(client, "adder", "4"))
    assert status == "StatusCode.NOT_FOUND"
    assert message == "model 'adder' has no ready version 4; ready: [1, 2, 3]"
    assert not client.is_model_ready("adder", "4")


def test_latest_two_loads_only_the_two_newest(client: triton.InferenceServerClient) -> None:
    assert index(client, "adder_latest2") == [("2", "READY", ""), ("3", "READY", "")]
    assert list(client.get_model_metadata("adder_latest2").versions) == ["2", "3"]
    assert infer(client, "adder_latest2") == ("3", 3.0)
    assert infer(client, "adder_latest2", "2") == ("2", 2.0)
    status, message = status_of(lambda: infer(client, "adder_latest2", "1"))
    assert status == "StatusCode.NOT_FOUND"
    assert "no ready version 1; ready: [2, 3]" in message


def test_default_policy_loads_the_newest_only(client: triton.InferenceServerClient) -> None:
    assert index(client, "adder_default") == [("3", "READY", "")]
    assert client.get_model_config("adder_default").config.version_policy.latest.num_versions == 1


def test_specific_versions(client: triton.InferenceServerClient) -> None:
    assert index(client, "adder_specific") == [("1", "READY", ""), ("3", "READY", "")]
    assert infer(client, "adder_specific", "1") == ("1", 1.0)
    assert infer(client, "adder_specific") == ("3", 3.0)
    policy = client.get_model_config("adder_specific").config.version_policy
    assert list(policy.specific.versions) == [1, 3]


def test_ready_only_index(
    versions_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(connect(versions_server))
    ready = stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(ready=True)).models
    assert {(m.name, m.version) for m in ready} >= {("adder", "1"), ("adder_latest2", "2")}
    assert all(m.state == "READY" for m in ready)


# --- explicit load and unload ---------------------------------------------------------------


def test_unload_load_and_reload(
    client: triton.InferenceServerClient,
    health: health_pb2_grpc.HealthStub,
    versions_root: Path,
    add_constant_model: Callable[[float], bytes],
) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert infer(client, "swap") == ("1", 1.0)
    assert serving_status(health, "swap") == serving

    client.unload_model("swap")
    assert not client.is_model_ready("swap")
    assert index(client, "swap") == [("1", "UNAVAILABLE", "unloaded")]
    assert serving_status(health, "swap") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status_of(lambda: infer(client, "swap")) == (
        "StatusCode.UNAVAILABLE",
        "model 'swap' has no ready version",
    )
    client.unload_model("swap")  # unloading what is not loaded succeeds, as in Triton
    assert index(client, "swap") == [("1", "UNAVAILABLE", "unloaded")]
    assert infer(client, "adder") == ("3", 3.0)  # the others keep serving

    client.load_model("swap")
    assert client.is_model_ready("swap")
    assert infer(client, "swap") == ("1", 1.0)
    assert serving_status(health, "swap") == serving

    # A new version that fails to load leaves the old one serving.
    (versions_root / "swap" / "2").mkdir()
    (versions_root / "swap" / "2" / "model.onnx").write_bytes(BROKEN_ONNX)
    status, message = status_of(lambda: client.load_model("swap"))
    assert status == "StatusCode.INTERNAL"
    assert "version 2" in message
    assert infer(client, "swap") == ("1", 1.0)
    entries = index(client, "swap")
    assert entries[0][:2] == ("", "UNAVAILABLE")
    assert entries[0][2].startswith("reload failed, previous versions serve: version 2")
    assert entries[1:] == [("1", "READY", "")]

    # A good new version replaces it (latest: 1).
    (versions_root / "swap" / "2" / "model.onnx").write_bytes(add_constant_model(2))
    client.load_model("swap")
    assert infer(client, "swap") == ("2", 2.0)
    assert index(client, "swap") == [("2", "READY", "")]
    assert status_of(lambda: infer(client, "swap", "1"))[0] == "StatusCode.NOT_FOUND"


def test_load_of_a_model_not_in_the_repository(client: triton.InferenceServerClient) -> None:
    assert status_of(lambda: client.load_model("nope")) == (
        "StatusCode.NOT_FOUND",
        "no model 'nope' in the repository",
    )


@pytest.mark.parametrize("name", ["../adder", "a/b", "..", ".", "", "adder/../../x", "a\\b"])
def test_names_escaping_the_root_are_refused(
    client: triton.InferenceServerClient, name: str
) -> None:
    for call in (client.load_model, client.unload_model):
        status, message = status_of(lambda call=call: call(name))  # type: ignore[misc]
        assert status == "StatusCode.INVALID_ARGUMENT"
        assert message == (
            f"model name '{name}' must name a directory directly inside the repository"
        )


def test_a_symlink_out_of_the_root_is_refused(
    client: triton.InferenceServerClient, versions_root: Path, tmp_path: Path
) -> None:
    shutil.copytree(versions_root / "adder", tmp_path / "outside")
    link = versions_root / "escape"
    link.symlink_to(tmp_path / "outside", target_is_directory=True)
    try:
        status, _ = status_of(lambda: client.load_model("escape"))
        assert status == "StatusCode.INVALID_ARGUMENT"
    finally:
        link.unlink()


def test_repository_name_must_be_empty(
    versions_server: ServerProcess,
    connect: Callable[[ServerProcess], grpc.Channel],
    rpc_error: Callable[[Callable[[], object], grpc.StatusCode], str],
) -> None:
    stub = service_pb2_grpc.GRPCInferenceServiceStub(connect(versions_server))
    request = service_pb2.RepositoryModelLoadRequest(repository_name="other", model_name="adder")
    message = rpc_error(lambda: stub.RepositoryModelLoad(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert message == "repository_name 'other' is unknown; leave it empty"


def test_server_stays_ready_after_an_explicit_unload(
    tmp_path: Path, write_model: WriteModel, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "a", {1: add_constant_model(1)}, "max_batch_size: 4\n")
    write_model(tmp_path, "b", {1: add_constant_model(1)}, "max_batch_size: 4\n")
    with start_server(tmp_path) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            assert client.is_server_ready()
            client.unload_model("b")
            assert client.is_server_ready()
        finally:
            client.close()


# --- a repository with broken models ----------------------------------------------------------


@pytest.fixture(scope="module")
def broken_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: WriteModel,
    add_constant_model: Callable[[float], bytes],
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("broken")
    write_model(root, "good", {1: add_constant_model(1)}, "max_batch_size: 4\n")
    write_model(root, "broken", {1: BROKEN_ONNX}, "max_batch_size: 4\n")
    write_model(root, "typo", {1: add_constant_model(1)}, "max_batch_sise: 4\n")
    write_model(root, "empty", {}, "max_batch_size: 4\n")
    write_model(
        root,
        "half_broken",
        {1: add_constant_model(1), 2: BROKEN_ONNX},
        "version_policy: {all: true}\nmax_batch_size: 4\n",
    )
    with start_server(root) as server:
        yield server


@pytest.fixture(scope="module")
def broken_client(broken_server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(broken_server.grpc_address)
    yield client
    client.close()


def test_broken_models_do_not_stop_the_server(broken_client: triton.InferenceServerClient) -> None:
    assert broken_client.is_server_live()
    assert not broken_client.is_server_ready()
    assert infer(broken_client, "good") == ("1", 1.0)


def test_index_says_why_a_model_failed(broken_client: triton.InferenceServerClient) -> None:
    [(version, state, reason)] = index(broken_client, "broken")
    assert (version, state) == ("", "UNAVAILABLE")
    assert reason.startswith("version 1: ONNX Runtime could not load ")
    assert "broken/1/model.onnx" in reason

    [(version, state, reason)] = index(broken_client, "typo")
    assert (version, state) == ("", "UNAVAILABLE")
    assert "unknown key(s) in config: ['max_batch_sise']" in reason

    assert index(broken_client, "empty") == [
        ("", "UNAVAILABLE", "no version directory: expected empty/<number>/ holding the model")
    ]


def test_a_broken_version_beside_a_good_one(broken_client: triton.InferenceServerClient) -> None:
    entries = index(broken_client, "half_broken")
    assert entries[0] == ("1", "READY", "")
    assert entries[1][:2] == ("2", "UNAVAILABLE")
    assert entries[1][2].startswith("version 2: ONNX Runtime could not load")
    assert infer(broken_client, "half_broken") == ("1", 1.0)


def test_a_failed_model_is_unavailable(broken_client: triton.InferenceServerClient) -> None:
    assert not broken_client.is_model_ready("broken")
    assert status_of(lambda: infer(broken_client, "broken")) == (
        "StatusCode.UNAVAILABLE",
        "model 'broken' has no ready version",
    )
    status, message = status_of(lambda: broken_client.load_model("broken"))
    assert status == "StatusCode.INTERNAL"
    assert "model 'broken' could not be loaded: version 1: ONNX Runtime could not load" in message


def test_a_failed_model_is_not_serving_in_health(
    broken_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> None:
    health = health_pb2_grpc.HealthStub(connect(broken_server))
    for name in ("broken", "typo", "empty"):
        status = health.Check(health_pb2.HealthCheckRequest(service=name)).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING, name
