"""Authentication and authorization on a real server process, through real clients
(tritonclient, and raw stubs for every RPC): API keys, JWT (HS256, RS256, ES256), models per
key, admin for the repository RPCs, health exempt, and keys reloaded on SIGHUP.

Faces: native gRPC unary and streaming here; REST and gRPC-web go through Envoy to the
same interceptor (docs/security.md, phase 2).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from processes import ServerProcess, start_server
from security_material import KeysFile, Signers
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

Code = grpc.StatusCode
CONFIG = "max_batch_size: 8\n"


@dataclass
class Secured:
    server: ServerProcess
    keys: KeysFile
    signers: Signers
    stub: service_pb2_grpc.GRPCInferenceServiceStub
    channel: grpc.Channel


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
    connect: Callable[[ServerProcess], grpc.Channel],
) -> Iterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    for name in ("a", "b", "c"):  # c: only ever unloaded
        write_model(root / "models", name, {1: add_constant_model(1.0)}, CONFIG)
    keys = KeysFile(root / "keys.yaml")
    keys.add("admin", ["*"], admin=True)
    keys.add("reader", ["a"])
    signers = Signers(root)
    flags = ["--api-keys-file", str(keys.path), *signers.flags(), "--security-reload-s", "0"]
    with start_server(root / "models", *flags) as server:
        channel = connect(server)
        yield Secured(
            server, keys, signers, service_pb2_grpc.GRPCInferenceServiceStub(channel), channel
        )


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


def infer_request(model: str = "a", request_id: str = "") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.ones((1, 2), np.float32).tobytes())
    return request


def unary_calls(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> dict[str, Callable[..., Any]]:
    """Every unary RPC, with a request an admin may send."""
    pb = service_pb2
    return {
        "ServerLive": lambda md: stub.ServerLive(pb.ServerLiveRequest(), metadata=md),
        "ServerReady": lambda md: stub.ServerReady(pb.ServerReadyRequest(), metadata=md),
        "ModelReady": lambda md: stub.ModelReady(pb.ModelReadyRequest(name="a"), metadata=md),
        "ServerMetadata": lambda md: stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=md),
        "ModelMetadata": lambda md: stub.ModelMetadata(
            pb.ModelMetadataRequest(name="a"), metadata=md
        ),
        "ModelConfig": lambda md: stub.ModelConfig(pb.ModelConfigRequest(name="a"), metadata=md),
        "ModelStatistics": lambda md: stub.ModelStatistics(
            pb.ModelStatisticsRequest(name="a"), metadata=md
        ),
        "ModelInfer": lambda md: stub.ModelInfer(infer_request(), metadata=md),
        "RepositoryIndex": lambda md: stub.RepositoryIndex(
            pb.RepositoryIndexRequest(), metadata=md
        ),
        "RepositoryModelLoad": lambda md: stub.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name="a"), metadata=md
        ),
        "RepositoryModelUnload": lambda md: stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="c"), metadata=md
        ),
    }


def bad_credentials(signers: Signers) -> dict[str, tuple[tuple[str, str], ...]]:
    now = int(time.time())
    return {
        "missing": (),
        "malformed header": (("authorization", "Token abc"),),
        "unknown API key": bearer("v2k_" + "x" * 43),
        "unknown x-api-key": (("x-api-key", "v2k_" + "y" * 43),),
        "malformed token": bearer("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"),
        **{
            f"{alg} {case}": bearer(token)
            for alg in ("HS256", "RS256", "ES256")
            for case, token in {
                "expired": signers.token(alg, exp=now - 3600),
                "not yet valid": signers.token(alg, nbf=now + 3600),
                "wrongly signed": signers.forged(alg),
                "wrong audience": signers.token(alg, aud="another-service"),
                "wrong issuer": signers.token(alg, iss="https://evil.test"),
            }.items()
        },
    }


def _code(call: Callable[..., object], *args: object) -> Code:
    try:
        call(*args)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    return Code.OK


def test_every_rpc_refuses_every_bad_credential(secured: Secured) -> None:
    calls = unary_calls(secured.stub)
    for case, metadata in bad_credentials(secured.signers).items():
        for name, call in calls.items():
            assert _code(call, metadata) == Code.UNAUTHENTICATED, (case, name)
        replies = secured.stub.ModelStreamInfer(iter([infer_request()]), metadata=metadata)
        assert _code(list, replies) == Code.UNAUTHENTICATED, (case, "ModelStreamInfer")


def test_refusals_say_why_without_echoing_the_credential(secured: Secured) -> None:
    expected = {
        "missing": "missing credential: send 'authorization: Bearer <token or API key>' or "
        "'x-api-key: <API key>'",
        "unknown API key": "unknown API key",
        "HS256 expired": "the token has expired",
        "RS256 wrongly signed": "the token's signature does not verify",
        "ES256 wrong audience": "the token is not for this audience (aud)",
        "HS256 not yet valid": "the token is not valid yet (nbf)",
    }
    credentials = bad_credentials(secured.signers)
    for case, message in expected.items():
        with pytest.raises(grpc.RpcError) as info:
            secured.stub.ServerLive(service_pb2.ServerLiveRequest(), metadata=credentials[case])
        assert info.value.details() == message  # type: ignore[attr-defined]


def test_valid_credentials_open_every_rpc(secured: Secured) -> None:
    admin = secured.keys.keys["admin"]
    credentials = [
        bearer(admin),
        (("x-api-key", admin),),
        *(bearer(secured.signers.token(alg)) for alg in ("HS256", "RS256", "ES256")),
    ]
    for metadata in credentials:
        for name, call in unary_calls(secured.stub).items():
            assert _code(call, metadata) == Code.OK, name
        replies = list(secured.stub.ModelStreamInfer(iter([infer_request()]), metadata=metadata))
        assert not replies[0].error_message and replies[0].infer_response.outputs


def test_tritonclient_sends_credentials_as_headers(secured: Secured) -> None:
    client = triton.InferenceServerClient(secured.server.grpc_address)
    headers = {"authorization": f"Bearer {secured.keys.keys['reader']}"}
    x = triton.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1, 2]], np.float32))
    try:
        result = client.infer("a", [x], headers=headers)
        assert result.as_numpy("y").tolist() == [[2.0, 3.0]]
        with pytest.raises(InferenceServerException) as info:
            client.infer("a", [x])
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        replies: list[tuple[object, object]] = []
        client.start_stream(lambda result, error: replies.append((result, error)), headers=headers)
        client.async_stream_infer("a", [x], request_id="s1")
        client.stop_stream()
        assert len(replies) == 1 and replies[0][1] is None
    finally:
        client.close()


def test_a_key_for_one_model_is_denied_the_others(secured: Secured) -> None:
    stub, reader = secured.stub, bearer(secured.keys.keys["reader"])
    pb = service_pb2
    assert _code(lambda: stub.ModelInfer(infer_request("a"), metadata=reader)) == Code.OK
    denied = {
        "ModelInfer": lambda: stub.ModelInfer(infer_request("b"), metadata=reader),
        "ModelMetadata": lambda: stub.ModelMetadata(
            pb.ModelMetadataRequest(name="b"), metadata=reader
        ),
        "ModelConfig": lambda: stub.ModelConfig(pb.ModelConfigRequest(name="b"), metadata=reader),
        "ModelReady": lambda: stub.ModelReady(pb.ModelReadyRequest(name="b"), metadata=reader),
        "ModelStatistics": lambda: stub.ModelStatistics(
            pb.ModelStatisticsRequest(name="b"), metadata=reader
        ),
    }  # fmt: skip
    for name, call in denied.items():
        assert _code(call) == Code.PERMISSION_DENIED, name
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(infer_request("b"), metadata=reader)
    assert info.value.details() == "API key 'reader' may not use model 'b'"  # type: ignore[attr-defined]
    every = stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=reader)
    assert {s.name for s in every.model_stats} == {"a"}
    token = bearer(secured.signers.token("RS256", scope="model:b"))
    assert _code(lambda: stub.ModelInfer(infer_request("a"), metadata=token)) == (
        Code.PERMISSION_DENIED
    )
    assert _code(lambda: stub.ModelInfer(infer_request("b"), metadata=token)) == Code.OK


def test_a_denied_stream_message_gets_an_error_reply_and_the_stream_goes_on(
    secured: Secured,
) -> None:
    requests = [infer_request("b", "denied"), infer_request("a", "allowed")]
    replies = secured.stub.ModelStreamInfer(
        iter(requests), metadata=bearer(secured.keys.keys["reader"])
    )
    by_id = {reply.infer_response.id: reply for reply in replies}
    assert by_id["denied"].error_message == "API key 'reader' may not use model 'b'"
    code = by_id["denied"].infer_response.parameters["error_code"].string_param
    assert code == "PERMISSION_DENIED"
    assert not by_id["allowed"].error_message


def test_repository_rpcs_need_admin(secured: Secured) -> None:
    calls = unary_calls(secured.stub)
    not_admin = [
        bearer(secured.keys.keys["reader"]),
        bearer(secured.signers.token("ES256", scope="model:*")),
    ]
    for metadata in not_admin:
        for name in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"):
            assert _code(calls[name], metadata) == Code.PERMISSION_DENIED, name


def test_health_is_exempt(secured: Secured) -> None:
    health = health_pb2_grpc.HealthStub(secured.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="a"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_sighup_reloads_the_keys_file(secured: Secured) -> None:
    """The server checks the file only on SIGHUP here (--security-reload-s 0)."""
    new = secured.keys.add("late", ["a"])
    live = unary_calls(secured.stub)["ServerLive"]
    assert _code(lambda: live(bearer(new))) == Code.UNAUTHENTICATED
    os.kill(secured.server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _code(lambda: live(bearer(new))) != Code.OK:
        assert time.monotonic() < deadline, "the new key was not accepted after SIGHUP"
        time.sleep(0.05)
    assert secured.server.process.poll() is None  # SIGHUP did not stop it


def test_health_without_exemption_needs_credentials(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    write_model(tmp_path / "models", "a", {1: add_constant_model(1.0)}, CONFIG)
    keys = KeysFile(tmp_path / "keys.yaml")
    key = keys.add("k", ["*"])
    with start_server(
        tmp_path / "models", "--api-keys-file", str(keys.path), "--auth-exempt", ""
    ) as server:
        channel = grpc.insecure_channel(server.grpc_address)
        try:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            assert _code(lambda: health.Check(request)) == Code.UNAUTHENTICATED
            assert health.Check(request, metadata=bearer(key)).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
        finally:
            channel.close()
