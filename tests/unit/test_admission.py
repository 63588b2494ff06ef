"""The admission interceptor on a real grpc.aio server, in process, with real ONNX Runtime:
credentials on every RPC, exemptions, each caller's permissions kept to its own RPC, per
message checks on streams, and rate limits under an injected clock (RetryInfo included).

The model is `double` (conftest): y = x * 2 + 1, x of shape [batch, 4]; a second model,
`other`, is the same graph under another name.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
import pytest_asyncio
from conftest import DOUBLE_CONFIG, affine_model, write_model
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc.admission import Admission, Exemptions, peer_address
from server.api.grpc.health import Health
from server.api.grpc.servicer import InferenceServicer
from server.app import InferenceServer
from server.core.dataplane import DataPlane, ServerInfo
from server.execution.version import OnnxVersions
from server.repository.repository import Repository
from server.security.authorizer import CallerAuthorizer
from server.security.bucket import Buckets
from server.security.credentials import Authenticator
from server.security.keys import KeyTable, digest, new_key
from server.security.principal import Rate
from server.settings import Settings

Code = grpc.StatusCode
SECRET = b"an-hs256-secret-for-the-unit-tests-only"
ISSUER, AUDIENCE = "https://issuer.test", "inference"


@dataclass
class Keys:
    admin: str
    reader: str  # `double` only, no admin
    path: Path


def _keys_file(root: Path) -> Keys:
    keys = Keys(new_key(), new_key(), root / "keys.yaml")
    entries = [
        {"name": "admin", "sha256": digest(keys.admin), "models": ["*"], "admin": True},
        {"name": "reader", "sha256": digest(keys.reader), "models": ["dou*"]},
    ]
    keys.path.write_text(json.dumps({"keys": entries}))
    return keys


@pytest.fixture
def repository(double_repository: Path) -> Path:
    write_model(double_repository, "other", affine_model(), DOUBLE_CONFIG)
    return double_repository


def token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "exp": now + 600}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


@dataclass
class Secured:
    channel: grpc.aio.Channel
    stub: pb_grpc.GRPCInferenceServiceStub
    keys: Keys


@pytest_asyncio.fixture
async def secured(repository: Path, tmp_path: Path) -> AsyncIterator[Secured]:
    keys = _keys_file(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    settings = Settings(
        model_repository=repository,
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=1.0,
        api_keys_file=keys.path,
        jwt_secret_file=secret,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    server = InferenceServer(settings)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    await channel.channel_ready()
    try:
        yield Secured(channel, pb_grpc.GRPCInferenceServiceStub(channel), keys)
    finally:
        await channel.close()
        await server.stop()


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


def infer_request(model: str = "double", request_id: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.ones((1, 4), np.float32).tobytes())
    return request


def unary_calls(stub: pb_grpc.GRPCInferenceServiceStub) -> dict[str, Callable[..., Any]]:
    """Every unary RPC of the inference service, with a request it would accept."""
    return {
        "ServerLive": lambda md: stub.ServerLive(pb.ServerLiveRequest(), metadata=md),
        "ServerReady": lambda md: stub.ServerReady(pb.ServerReadyRequest(), metadata=md),
        "ModelReady": lambda md: stub.ModelReady(pb.ModelReadyRequest(name="double"), metadata=md),
        "ServerMetadata": lambda md: stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=md),
        "ModelMetadata": lambda md: stub.ModelMetadata(
            pb.ModelMetadataRequest(name="double"), metadata=md
        ),
        "ModelConfig": lambda md: stub.ModelConfig(
            pb.ModelConfigRequest(name="double"), metadata=md
        ),
        "ModelStatistics": lambda md: stub.ModelStatistics(
            pb.ModelStatisticsRequest(name="double"), metadata=md
        ),
        "ModelInfer": lambda md: stub.ModelInfer(infer_request(), metadata=md),
        "RepositoryIndex": lambda md: stub.RepositoryIndex(
            pb.RepositoryIndexRequest(), metadata=md
        ),
        "RepositoryModelLoad": lambda md: stub.RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name="double"), metadata=md
        ),
        "RepositoryModelUnload": lambda md: stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name="other"), metadata=md
        ),
    }


BAD_CREDENTIALS: dict[str, tuple[tuple[str, str], ...]] = {
    "missing": (),
    "not bearer": (("authorization", "Basic dXNlcjpwYXNz"),),
    "empty bearer": (("authorization", "Bearer "),),
    "unknown key": bearer(new_key()),
    "unknown x-api-key": (("x-api-key", new_key()),),
    "malformed token": bearer("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"),
    "expired token": bearer(token(exp=int(time.time()) - 3600)),
    "wrongly signed token": bearer(
        jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "exp": 2**31}, b"x" * 32)
    ),
    "wrong audience": bearer(token(aud="another-service")),
    "two credentials": (("x-api-key", "a"), ("authorization", "Bearer b")),
}


async def test_every_rpc_refuses_every_bad_credential(secured: Secured) -> None:
    calls = unary_calls(secured.stub)
    for case, metadata in BAD_CREDENTIALS.items():
        for name, call in calls.items():
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(metadata)
            assert info.value.code() == Code.UNAUTHENTICATED, (case, name)
        stream = secured.stub.ModelStreamInfer(metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            # The refusal may arrive before the write completes, or only on the read.
            await stream.write(infer_request())
            await stream.read()
        assert info.value.code() == Code.UNAUTHENTICATED, case


async def test_refusals_say_what_is_wrong(secured: Secured) -> None:
    live = unary_calls(secured.stub)["ServerLive"]
    expected = {
        "missing": "missing credential: send 'authorization: Bearer <token or API key>' or "
        "'x-api-key: <API key>'",
        "not bearer": "'authorization' must be 'Bearer <token or API key>'",
        "unknown key": "unknown API key",
        "expired token": "the token has expired",
        "wrong audience": "the token is not for this audience (aud)",
        "wrongly signed token": "the token's signature does not verify",
        "two credentials": "more than one credential: send one 'authorization' or 'x-api-key'",
    }
    for case, message in expected.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await live(BAD_CREDENTIALS[case])
        assert info.value.details() == message


async def test_admin_credentials_open_every_rpc(secured: Secured) -> None:
    for credential in (bearer(secured.keys.admin), (("x-api-key", secured.keys.admin),)):
        for name, call in unary_calls(secured.stub).items():
            assert await call(credential) is not None, name
    admin_token = bearer(token(scope="model:* admin"))
    for call in unary_calls(secured.stub).values():
        await call(admin_token)


async def test_a_key_for_one_model_gets_permission_denied_for_others(secured: Secured) -> None:
    stub, reader = secured.stub, bearer(secured.keys.reader)
    assert (await stub.ModelInfer(infer_request("double"), metadata=reader)).outputs
    denied = {
        "ModelInfer": stub.ModelInfer(infer_request("other"), metadata=reader),
        "ModelMetadata": stub.ModelMetadata(pb.ModelMetadataRequest(name="other"), metadata=reader),
        "ModelConfig": stub.ModelConfig(pb.ModelConfigRequest(name="other"), metadata=reader),
        "ModelReady": stub.ModelReady(pb.ModelReadyRequest(name="other"), metadata=reader),
        "ModelStatistics": stub.ModelStatistics(
            pb.ModelStatisticsRequest(name="other"), metadata=reader
        ),
        "unknown model": stub.ModelMetadata(pb.ModelMetadataRequest(name="nope"), metadata=reader),
    }
    for name, call in denied.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == Code.PERMISSION_DENIED, name
    assert info.value.details() == "API key 'reader' may not use model 'nope'"
    # Statistics for every model: only the ones the key may see.
    every = await stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=reader)
    assert {s.name for s in every.model_stats} == {"double"}


async def test_repository_rpcs_need_admin(secured: Secured) -> None:
    calls = unary_calls(secured.stub)
    for credential in (bearer(secured.keys.reader), bearer(token(scope="model:*"))):
        for name in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await calls[name](credential)
            assert info.value.code() == Code.PERMISSION_DENIED, name
    assert info.value.details() == (
        "token subject 'svc' may not use the repository RPCs: they need an admin key or the "
        "token scope 'admin'"
    )


async def test_a_denied_stream_message_gets_an_error_reply_and_the_stream_goes_on(
    secured: Secured,
) -> None:
    stream = secured.stub.ModelStreamInfer(metadata=bearer(secured.keys.reader))
    await stream.write(infer_request("other", "denied"))
    await stream.write(infer_request("double", "allowed"))
    await stream.done_writing()
    replies = {reply.infer_response.id: reply async for reply in stream}
    denied = replies["denied"]
    assert denied.error_message == "API key 'reader' may not use model 'other'"
    assert denied.infer_response.parameters["error_code"].string_param == "PERMISSION_DENIED"
    assert not replies["allowed"].error_message and replies["allowed"].infer_response.outputs


async def test_health_is_exempt_and_reflection_is_not(secured: Secured) -> None:
    health = health_pb2_grpc.HealthStub(secured.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="double"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflection = reflection_pb2_grpc.ServerReflectionStub(secured.channel)
    stream = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    with pytest.raises(grpc.aio.AioRpcError):
        async for _ in stream:
            pass
    # The read, or sending the request behind it (grpc reports that one as INTERNAL),
    # may meet the refusal first; the call's own status is the server's answer.
    assert await stream.code() == Code.UNAUTHENTICATED
    stream = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=bearer(secured.keys.reader),
    )
    services = [s.name async for r in stream for s in r.list_services_response.service]
    assert "inference.GRPCInferenceService" in services


async def test_each_rpc_keeps_its_own_caller(secured: Secured) -> None:
    """Interleaved calls from two keys: each is judged by its own key."""
    admin, reader = bearer(secured.keys.admin), bearer(secured.keys.reader)

    async def index(metadata: Any) -> str:
        try:
            await secured.stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    callers = [admin if i % 2 else reader for i in range(200)]
    outcomes = await asyncio.gather(*(index(m) for m in callers))
    assert outcomes == ["OK" if m is admin else "PERMISSION_DENIED" for m in callers]


def test_exemptions_match_services_methods_and_prefixes() -> None:
    exempt = Exemptions(["grpc.health.v1.Health", "/inference.X/Live", "grpc.reflection.*", ""])
    assert "/grpc.health.v1.Health/Check" in exempt
    assert "/grpc.health.v1.HealthExtra/Check" not in exempt
    assert "/inference.X/Live" in exempt and "/inference.X/Ready" not in exempt
    assert "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" in exempt
    assert "/inference.GRPCInferenceService/ServerLive" not in Exemptions([""])


def test_peer_addresses_drop_the_port() -> None:
    assert peer_address("ipv4:10.1.2.3:5555") == "ipv4:10.1.2.3"
    assert peer_address("ipv6:[::1]:5555") == "ipv6:[::1]"
    assert peer_address("unix:/tmp/sock") == "unix:/tmp/sock"


# --- rate limits under an injected clock ----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Limited:
    stub: pb_grpc.GRPCInferenceServiceStub
    clock: Clock
    keys: Keys


async def _serve(
    repository: Path, admission: Admission
) -> tuple[grpc.aio.Server, Repository, grpc.aio.Channel, str]:
    models = Repository(repository, OnnxVersions(1))
    dataplane = DataPlane(models, ServerInfo("test", "0"), authorizer=CallerAuthorizer())
    server = grpc.aio.server(interceptors=[admission])
    InferenceServicer(dataplane, 1 << 20).register(server)
    health_pb2_grpc.add_HealthServicer_to_server(Health().servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await models.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    await channel.channel_ready()
    return server, models, channel, address


@pytest_asyncio.fixture
async def limited(repository: Path, tmp_path: Path) -> AsyncIterator[Limited]:
    """Keys at 2 requests/s with a burst of 3, on a clock the test moves."""
    keys = _keys_file(tmp_path)
    clock = Clock()
    buckets = Buckets(Rate(2.0, 3), clock)
    admission = Admission(
        Authenticator(KeyTable(keys.path), None), buckets, ["grpc.health.v1.Health"]
    )
    server, models, channel, _ = await _serve(repository, admission)
    try:
        yield Limited(pb_grpc.GRPCInferenceServiceStub(channel), clock, keys)
    finally:
        await channel.close()
        await server.stop(0)
        await models.close()


async def _live(stub: pb_grpc.GRPCInferenceServiceStub, key: str) -> grpc.aio.AioRpcError | None:
    try:
        await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer(key))
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def test_a_burst_beyond_the_bucket_is_refused_with_a_retry_hint(limited: Limited) -> None:
    stub, admin = limited.stub, limited.keys.admin
    assert [await _live(stub, admin) for _ in range(3)] == [None, None, None]
    limited.clock.now += 0.1
    refused = await _live(stub, admin)
    assert refused is not None and refused.code() == Code.RESOURCE_EXHAUSTED
    assert refused.details() == (
        "rate limit of 2 requests/s (burst 3) for API key 'admin' exceeded; retry after 0.4 s"
    )
    status = rpc_status.from_call(refused)
    assert status is not None and status.message == refused.details()
    [detail] = status.details
    retry = error_details_pb2.RetryInfo()
    assert detail.Unpack(retry)
    assert retry.retry_delay.ToNanoseconds() == pytest.approx(400_000_000, abs=1000)
    trailers = dict(refused.trailing_metadata() or ())
    assert trailers["retry-after"] == "1"


async def test_other_keys_are_unaffected_and_the_bucket_refills(limited: Limited) -> None:
    stub, admin, reader = limited.stub, limited.keys.admin, limited.keys.reader
    for _ in range(3):
        await _live(stub, admin)
    assert await _live(stub, admin) is not None
    assert [await _live(stub, reader) for _ in range(3)] == [None, None, None]
    limited.clock.now += 0.5  # one token at 2/s
    assert await _live(stub, admin) is None
    assert await _live(stub, admin) is not None
    limited.clock.now += 10  # full again: the burst, no more
    assert [await _live(stub, admin) for _ in range(3)] == [None, None, None]
    assert await _live(stub, admin) is not None


async def test_stream_messages_each_take_a_token(limited: Limited) -> None:
    stream = limited.stub.ModelStreamInfer(metadata=bearer(limited.keys.admin))
    for index in range(5):
        await stream.write(infer_request("double", str(index)))
    await stream.done_writing()
    replies = {r.infer_response.id: r async for r in stream}
    refused = {i for i, r in replies.items() if r.error_message}
    assert len(replies) == 5 and len(refused) == 2
    for index in refused:
        reply = replies[index]
        assert reply.infer_response.parameters["error_code"].string_param == ("RESOURCE_EXHAUSTED")
        assert reply.error_message.startswith(
            "rate limit of 2 requests/s (burst 3) for API key 'admin' exceeded; retry after"
        )


async def test_without_authentication_each_client_address_has_a_bucket(
    repository: Path,
) -> None:
    clock = Clock()
    admission = Admission(None, Buckets(Rate(1.0, 2), clock), ["grpc.health.v1.Health"])
    server, models, channel, address = await _serve(repository, admission)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    try:
        assert (await stub.ModelInfer(infer_request())).outputs
        assert (await stub.RepositoryIndex(pb.RepositoryIndexRequest())).models  # admin: auth off
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ServerLive(pb.ServerLiveRequest())
        assert info.value.code() == Code.RESOURCE_EXHAUSTED
        assert info.value.details() == (
            "rate limit of 1 requests/s (burst 2) for client 'ipv4:127.0.0.1' exceeded; "
            "retry after 1 s"
        )
        # A new connection from the same address shares the bucket.
        async with grpc.aio.insecure_channel(address) as again:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.GRPCInferenceServiceStub(again).ServerLive(pb.ServerLiveRequest())
        # Health is exempt, and streams pay per message.
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest())
        clock.now += 2
        stream = stub.ModelStreamInfer()
        for index in range(3):
            await stream.write(infer_request("double", str(index)))
        await stream.done_writing()
        errors = [r.error_message async for r in stream if r.error_message]
        assert len(errors) == 1 and "for client 'ipv4:127.0.0.1'" in errors[0]
    finally:
        await channel.close()
        await server.stop(0)
        await models.close()
