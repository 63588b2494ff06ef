"""Security through a real Envoy in front of a real server with API keys and mutual TLS:
refused credentials, denied models and rate limits come out as V2 REST's 401, 403 and 429
(with Retry-After) and as gRPC-web's statuses; Envoy serves HTTPS, refuses plaintext, picks
up a rotated certificate without a restart, and reaches the server over mutual TLS.

One server and one Envoy for the module. The server requires a client certificate, so every
call that succeeds here went through Envoy's upstream mutual TLS.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc_web
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from processes import start_server
from security_material import KeysFile, Pki, Signers
from test_security_auth import bad_credentials
from traffic import wait_until
from tritonclient.grpc import service_pb2

from gateway import RunningGateway, start_gateway
from gateway.build import build
from gateway.settings import ListenerTls, UpstreamTls

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
INFER = "/inference.GRPCInferenceService/ModelInfer"
UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED = 16, 7, 8


@dataclass
class Edge:
    gateway: RunningGateway
    pki: Pki
    keys: dict[str, str]
    listener: ListenerTls
    signers: Signers

    def client(self) -> httpx.Client:
        trust = ssl.create_default_context(cafile=self.pki.ca_file)
        return httpx.Client(base_url=self.gateway.url, verify=trust, timeout=30)


@pytest.fixture(scope="module")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> Iterator[Edge]:
    root = tmp_path_factory.mktemp("edge")
    for name in ("a", "b"):
        write_model(root / "models", name, {1: add_constant_model(1.0)}, "max_batch_size: 4\n")
    keys = KeysFile(root / "keys.yaml")
    keys.add("reader", ["a"])
    for face in ("rest", "web"):  # one token, then 100 s to the next
        keys.add(f"slow-{face}", ["*"], rate=0.01, burst=1)
    pki = Pki(root)
    signers = Signers(root)
    (root / "listener").mkdir()
    listener = ListenerTls(root / "listener" / "gateway.pem", root / "listener" / "gateway.key")
    _issue(pki, listener)
    envoy_cert = pki.client("envoy")
    built = build(root / "build")
    with (
        start_server(
            root / "models", *pki.flags(), *signers.flags(), "--api-keys-file", str(keys.path)
        ) as server,
        start_gateway(
            server.grpc_port,
            build_dir=built.descriptor_path.parent,
            log_path=root / "envoy.log",
            tls=listener,
            upstream_tls=UpstreamTls(pki.ca_file, *envoy_cert),
        ) as gateway,
    ):
        yield Edge(gateway, pki, keys.keys, listener, signers)


def _issue(pki: Pki, listener: ListenerTls) -> bytes:
    """A new listener certificate for 127.0.0.1, renamed into place (key first: until the
    certificate follows, Envoy refuses the mismatched pair and keeps the old one). Returns
    it in DER, as a handshake shows it."""
    issued = pki.ca.issue_cert("127.0.0.1")
    for path, pem in ((listener.key_file, issued.private_key_pem), (listener.cert_file, None)):
        staged = path.with_suffix(".new")
        if pem is None:
            staged.write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
        else:
            pem.write_to_path(str(staged))
        os.replace(staged, path)
    return ssl.PEM_cert_to_DER_cert(issued.cert_chain_pems[0].bytes().decode())


def _served_certificate(edge: Edge) -> bytes:
    context = ssl.create_default_context(cafile=edge.pki.ca_file)
    with (
        socket.create_connection((edge.gateway.host, edge.gateway.http_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=edge.gateway.host) as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate


def _infer_message(model: str) -> bytes:
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    request.raw_input_contents.append(np.array([[1, 2]], np.float32).tobytes())
    return request.SerializeToString()


def test_rest_over_https_refuses_and_admits_as_v2_rest(edge: Edge) -> None:
    reader = edge.keys["reader"]
    with edge.client() as client:
        for headers in ({"authorization": f"Bearer {reader}"}, {"x-api-key": reader}):
            reply = client.post("/v2/models/a/infer", json=BODY, headers=headers)
            assert reply.status_code == 200, reply.text
            assert reply.json()["outputs"][0]["data"] == [2.0, 3.0]

        missing = client.post("/v2/models/a/infer", json=BODY)
        assert missing.status_code == 401
        assert missing.json()["error"].startswith("missing credential")
        assert missing.headers["www-authenticate"] == "Bearer"
        unknown = client.get("/v2/models/a", headers={"x-api-key": "v2k_" + "x" * 43})
        assert (unknown.status_code, unknown.json()) == (401, {"error": "unknown API key"})

        denied = client.post("/v2/models/b/infer", json=BODY, headers={"x-api-key": reader})
        assert denied.status_code == 403
        assert denied.json() == {"error": "API key 'reader' may not use model 'b'"}
        assert "grpc-status" not in denied.headers


def test_every_bad_credential_is_refused_on_rest_and_grpc_web(edge: Edge) -> None:
    """Missing, malformed, unknown, expired, not yet valid, wrongly signed, wrong audience
    and wrong issuer (HS256, RS256 and ES256): 401 with a V2 error on REST, UNAUTHENTICATED
    on gRPC-web; a valid token of each algorithm is admitted on both."""
    with edge.client() as client:
        for case, metadata in bad_credentials(edge.signers).items():
            headers = dict(metadata)
            rest = client.post("/v2/models/a/infer", json=BODY, headers=headers)
            assert rest.status_code == 401, (case, rest.text)
            assert rest.json()["error"], case
            web = grpc_web.call(client, INFER, _infer_message("a"), headers)
            assert web.status == UNAUTHENTICATED, (case, web.message)
        for algorithm in ("HS256", "RS256", "ES256"):
            headers = {"authorization": f"Bearer {edge.signers.token(algorithm)}"}
            rest = client.post("/v2/models/a/infer", json=BODY, headers=headers)
            assert rest.status_code == 200, (algorithm, rest.text)
            web = grpc_web.call(client, INFER, _infer_message("a"), headers)
            assert web.status == 0, (algorithm, web.message)


def test_a_rate_limited_rest_call_is_429_with_retry_after(edge: Edge) -> None:
    headers = {"x-api-key": edge.keys["slow-rest"]}
    with edge.client() as client:
        assert client.get("/v2/models/a", headers=headers).status_code == 200
        limited = client.get("/v2/models/a", headers=headers)
    assert limited.status_code == 429
    assert limited.json()["error"].startswith("rate limit of 0.01 requests/s (burst 1)")
    assert 1 <= int(limited.headers["retry-after"]) <= 100
    assert limited.headers["content-type"] == "application/json"


def test_grpc_web_gets_the_grpc_statuses(edge: Edge) -> None:
    reader, slow = edge.keys["reader"], edge.keys["slow-web"]
    with edge.client() as client:
        ok = grpc_web.call(client, INFER, _infer_message("a"), {"x-api-key": reader})
        assert ok.status == 0 and len(ok.messages) == 1
        missing = grpc_web.call(client, INFER, _infer_message("a"))
        assert missing.status == UNAUTHENTICATED
        denied = grpc_web.call(client, INFER, _infer_message("b"), {"x-api-key": reader})
        assert (denied.status, denied.message) == (
            PERMISSION_DENIED,
            "API key 'reader' may not use model 'b'",
        )
        assert grpc_web.call(client, INFER, _infer_message("a"), {"x-api-key": slow}).status == 0
        limited = grpc_web.call(client, INFER, _infer_message("a"), {"x-api-key": slow})
    assert limited.status == RESOURCE_EXHAUSTED
    assert 1 <= int(limited.headers["retry-after"]) <= 100
    assert "grpc-status-details-bin" in limited.headers  # the RetryInfo


def test_native_grpc_over_the_tls_listener(edge: Edge) -> None:
    client = triton.InferenceServerClient(
        edge.gateway.address, ssl=True, root_certificates=str(edge.pki.ca_file)
    )
    x = triton.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1, 2]], np.float32))
    try:
        result = client.infer("a", [x], headers={"authorization": f"Bearer {edge.keys['reader']}"})
    finally:
        client.close()
    assert result.as_numpy("y").tolist() == [[2.0, 3.0]]


def test_plaintext_to_the_tls_listener_fails(edge: Edge) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{edge.gateway.address}/v2/health/live", timeout=10)


def test_a_rotated_certificate_is_served_without_a_restart(edge: Edge) -> None:
    before = _served_certificate(edge)
    rotated = _issue(edge.pki, edge.listener)
    assert rotated != before
    wait_until(lambda: _served_certificate(edge) == rotated, 30, "the rotated certificate")
    with edge.client() as client:  # and it still serves
        live = client.get("/v2/health/live", headers={"x-api-key": edge.keys["reader"]})
    assert live.json() == {"live": True}
