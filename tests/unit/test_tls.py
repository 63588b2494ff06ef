"""TLS and mutual TLS on a real grpc.aio server, in process, with certificates from a CA the
test makes (trustme): who may connect, and certificates that reload on change and on
request (SIGHUP) without a restart, a broken pair leaving the old one serving."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import trustme

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc
from server.api.grpc.tls import CertificateFiles, TlsError
from server.app import InferenceServer
from server.settings import Settings

HOST = "localhost"


@dataclass
class Pki:
    ca: trustme.CA
    cert: Path
    key: Path
    client_ca: Path


def _issue(ca: trustme.CA, directory: Path, name: str) -> tuple[Path, Path]:
    issued = ca.issue_cert(HOST, "127.0.0.1")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    key.write_bytes(issued.private_key_pem.bytes())
    return cert, key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    cert, key = _issue(ca, tmp_path, "server")
    client_ca = tmp_path / "client-ca.pem"
    client_ca.write_bytes(ca.cert_pem.bytes())
    return Pki(ca, cert, key, client_ca)


def _credentials(ca: trustme.CA, client: trustme.LeafCert | None = None) -> grpc.ChannelCredentials:
    if client is None:
        return grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    return grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(), client.private_key_pem.bytes(), client.cert_chain_pems[0].bytes()
    )


async def _live(port: int, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    """ServerLive over a new connection (a channel of its own, no shared subchannel)."""
    options = [("grpc.ssl_target_name_override", HOST), ("grpc.use_local_subchannel_pool", 1)]
    target = f"127.0.0.1:{port}"
    channel = (
        grpc.aio.insecure_channel(target, options=options)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options=options)
    )
    async with channel:
        try:
            await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
                pb.ServerLiveRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest_asyncio.fixture
async def tls_server(tmp_path: Path, pki: Pki) -> AsyncIterator[tuple[InferenceServer, int]]:
    (tmp_path / "models").mkdir()
    settings = Settings(
        model_repository=tmp_path / "models",
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=0.5,
        tls_cert_file=pki.cert,
        tls_key_file=pki.key,
        tls_client_ca_file=pki.client_ca,
    )
    server = InferenceServer(settings)
    port = await server.start()
    try:
        yield server, port
    finally:
        await server.stop()


async def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(
    tls_server: tuple[InferenceServer, int], pki: Pki
) -> None:
    _, port = tls_server
    assert await _live(port, _credentials(pki.ca, pki.ca.issue_cert("client"))) == (
        grpc.StatusCode.OK
    )
    assert await _live(port, _credentials(pki.ca)) == grpc.StatusCode.UNAVAILABLE  # no cert
    stranger = trustme.CA().issue_cert("client")
    assert await _live(port, _credentials(pki.ca, stranger)) == grpc.StatusCode.UNAVAILABLE
    assert await _live(port, None) == grpc.StatusCode.UNAVAILABLE  # plaintext


async def test_tls_without_a_client_ca_asks_for_no_certificate(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "models").mkdir()
    settings = Settings(
        model_repository=tmp_path / "models",
        host="127.0.0.1",
        grpc_port=0,
        shutdown_grace_s=0.5,
        tls_cert_file=pki.cert,
        tls_key_file=pki.key,
    )
    server = InferenceServer(settings)
    port = await server.start()
    try:
        assert await _live(port, _credentials(pki.ca)) == grpc.StatusCode.OK
        assert await _live(port, _credentials(trustme.CA())) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()


async def test_a_new_certificate_serves_new_connections(
    tls_server: tuple[InferenceServer, int], pki: Pki, tmp_path: Path
) -> None:
    """Rotate to a certificate from another CA: clients that trust only the new CA get in,
    clients that trust only the old one do not."""
    _, port = tls_server
    client = pki.ca.issue_cert("client")
    new_ca = trustme.CA()
    cert, key = _issue(new_ca, tmp_path, "rotated")
    os.replace(cert, pki.cert)
    os.replace(key, pki.key)
    assert await _live(port, _credentials(new_ca, client)) == grpc.StatusCode.OK
    assert await _live(port, _credentials(pki.ca, client)) == grpc.StatusCode.UNAVAILABLE


async def test_a_broken_pair_leaves_the_old_certificate_serving(
    tls_server: tuple[InferenceServer, int],
    pki: Pki,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, port = tls_server
    client = pki.ca.issue_cert("client")
    _, other_key = _issue(trustme.CA(), tmp_path, "other")
    os.replace(other_key, pki.key)  # the key no longer matches the certificate
    with caplog.at_level(logging.ERROR, logger="server.api.grpc.tls"):
        assert await _live(port, _credentials(pki.ca, client)) == grpc.StatusCode.OK
    [record] = caplog.records
    assert record.getMessage() == (
        "certificate reload failed; the previous certificates stay in force"
    )
    assert "are not a usable certificate and private key" in record.reason  # type: ignore[attr-defined]


async def test_sighup_rereads_the_certificates_even_unchanged(
    tls_server: tuple[InferenceServer, int], pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    server, port = tls_server
    client = pki.ca.issue_cert("client")
    with caplog.at_level(logging.INFO, logger="server.api.grpc.tls"):
        assert await _live(port, _credentials(pki.ca, client)) == grpc.StatusCode.OK
        assert not caplog.records  # nothing changed: nothing re-read
        server.security.reload()  # what SIGHUP calls
        assert await _live(port, _credentials(pki.ca, client)) == grpc.StatusCode.OK
    assert [r.getMessage() for r in caplog.records] == ["certificates reloaded"]


def test_unusable_files_are_a_start_up_error(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsError, match="are not a usable certificate and private key"):
        CertificateFiles(garbage, pki.key)
    with pytest.raises(TlsError, match="--tls-client-ca-file is not a usable PEM bundle"):
        CertificateFiles(pki.cert, pki.key, garbage)
    with pytest.raises(TlsError, match="No such file"):
        CertificateFiles(tmp_path / "absent.pem", pki.key)
