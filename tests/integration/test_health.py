"""grpc.health.v1, server reflection, and a graceful stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as triton
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from processes import ROOT, ServerProcess, stop_process
from tritonclient.grpc import model_config_pb2, service_pb2

SERVICE = "inference.GRPCInferenceService"
SERVING = health_pb2.HealthCheckResponse.SERVING
RPCS = {
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelInfer",
    "ModelStreamInfer",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
    "RepositoryModelLoad",
    "RepositoryModelUnload",
}


@pytest.fixture(scope="module")
def health(
    default_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(connect(default_server))


@pytest.mark.parametrize(
    "service",
    [
        "",
        "live",
        "inference.GRPCInferenceService",
        "digits",
        "text_direction",
        "minilm",
        "silero_vad",
    ],
    ids=repr,
)
def test_server_and_every_model_are_serving(
    health: health_pb2_grpc.HealthStub, service: str
) -> None:
    assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == SERVING


def test_unknown_service_is_not_found(
    health: health_pb2_grpc.HealthStub,
    rpc_error: Callable[[Callable[[], object], grpc.StatusCode], str],
) -> None:
    request = health_pb2.HealthCheckRequest(service="nope")
    rpc_error(lambda: health.Check(request), grpc.StatusCode.NOT_FOUND)


# --- reflection -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reflected(
    default_server: ServerProcess, connect: Callable[[ServerProcess], grpc.Channel]
) -> tuple[ProtoReflectionDescriptorDatabase, descriptor_pool.DescriptorPool]:
    """The server's descriptors, in a pool of their own (tritonclient's copies live in the
    default pool under the same names)."""
    database = ProtoReflectionDescriptorDatabase(connect(default_server))
    return database, descriptor_pool.DescriptorPool(database)


def test_reflection_lists_the_services(
    reflected: tuple[ProtoReflectionDescriptorDatabase, descriptor_pool.DescriptorPool],
) -> None:
    database, _ = reflected
    assert set(database.get_services()) == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def _fields(message: Descriptor) -> dict[str, tuple[int, int, str, bool]]:
    """Each field's number, wire type, message or enum type name, and repeatedness."""
    fields = {}
    for f in message.fields:
        kind = f.message_type or f.enum_type
        fields[f.name] = (f.number, f.type, kind.full_name if kind else "", f.is_repeated)
    return fields


def test_reflected_contract_is_wire_compatible_with_tritonclient(
    reflected: tuple[ProtoReflectionDescriptorDatabase, descriptor_pool.DescriptorPool],
) -> None:
    """Every RPC, message and field the server declares exists in tritonclient's copy of
    Triton's protos with the same name, number and type."""
    assert service_pb2 and model_config_pb2  # their descriptors fill the default pool
    _, pool = reflected
    triton_pool = descriptor_pool.Default()
    ours = pool.FindServiceByName(SERVICE)
    theirs = triton_pool.FindServiceByName(SERVICE)
    assert {m.name for m in ours.methods} == RPCS
    pending: list[Descriptor] = []
    for method in ours.methods:
        twin = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name
        assert method.client_streaming == twin.client_streaming, method.name
        assert method.server_streaming == twin.server_streaming, method.name
        pending += [method.input_type, method.output_type]
    seen: set[str] = set()
    while pending:
        message = pending.pop()
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        twin_fields = _fields(triton_pool.FindMessageTypeByName(message.full_name))
        for name, field in _fields(message).items():
            assert twin_fields.get(name) == field, f"{message.full_name}.{name}"
        for field in message.fields:
            if field.message_type:
                pending.append(field.message_type)
            if field.enum_type:
                values = {v.name: v.number for v in field.enum_type.values}
                twin_enum = triton_pool.FindEnumTypeByName(field.enum_type.full_name)
                assert values.items() <= {v.name: v.number for v in twin_enum.values}.items()
    assert "inference.ModelConfig" in seen


# --- graceful stop --------------------------------------------------------------------------


def test_sigterm_stops_gracefully(
    tmp_path: Path,
    write_model: Callable[[Path, str, dict[int, bytes], str], Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    """Started by hand rather than with start_server, so that the whole log can be read
    once the process has exited."""
    write_model(tmp_path, "adder", {1: add_constant_model(1)}, "max_batch_size: 4\n")
    command = [sys.executable, "-m", "server", "--model-repository", str(tmp_path)]
    command += ["--host", "127.0.0.1", "--grpc-port", "0"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if '"event": "listening"' in line:
                port = json.loads(line)["grpc_port"]
                break
        else:
            pytest.fail("the server exited before listening")
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.is_server_ready()
        client.close()
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == 0, rest
    events = [json.loads(line).get("event") for line in rest.splitlines() if line.startswith("{")]
    assert events[-2:] == ["stopping", "stopped"]
