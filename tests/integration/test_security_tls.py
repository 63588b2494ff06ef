"""TLS and mutual TLS on a real server process, with tritonclient as users configure it:
a client without a certificate, or with one from another CA, is refused; a valid one works,
and still needs its API key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
import trustme
from processes import ServerProcess, start_server
from security_material import KeysFile, Pki
from tritonclient.utils import InferenceServerException


@dataclass
class TlsServer:
    server: ServerProcess
    pki: Pki
    key: str


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("tls")
    write_model(root / "models", "a", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    pki = Pki(root)
    keys = KeysFile(root / "keys.yaml")
    key = keys.add("client", ["*"])
    with start_server(root / "models", *pki.flags(), "--api-keys-file", str(keys.path)) as server:
        yield TlsServer(server, pki, key)


def _client(tls: TlsServer, certificate: tuple[Path, Path] | None) -> triton.InferenceServerClient:
    cert, key = certificate if certificate else (None, None)
    return triton.InferenceServerClient(
        tls.server.grpc_address,
        ssl=True,
        root_certificates=str(tls.pki.ca_file),
        private_key=None if key is None else str(key),
        certificate_chain=None if cert is None else str(cert),
    )


def _live(client: triton.InferenceServerClient, key: str | None) -> str:
    headers = None if key is None else {"authorization": f"Bearer {key}"}
    try:
        client.is_server_live(headers=headers, client_timeout=10)
    except InferenceServerException as exc:
        return str(exc.status())
    finally:
        client.close()
    return "OK"


def test_a_client_with_a_certificate_from_the_ca_works(tls_server: TlsServer) -> None:
    client = _client(tls_server, tls_server.pki.client("good"))
    x = triton.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.array([[1, 2]], np.float32))
    try:
        result = client.infer("a", [x], headers={"authorization": f"Bearer {tls_server.key}"})
        assert result.as_numpy("y").tolist() == [[2.0, 3.0]]
    finally:
        client.close()


def test_the_api_key_is_still_required_over_mutual_tls(tls_server: TlsServer) -> None:
    assert _live(_client(tls_server, tls_server.pki.client("keyless")), None) == (
        "StatusCode.UNAUTHENTICATED"
    )


def test_a_client_without_a_certificate_is_refused(tls_server: TlsServer) -> None:
    assert _live(_client(tls_server, None), tls_server.key) == "StatusCode.UNAVAILABLE"


def test_a_certificate_from_another_ca_is_refused(tls_server: TlsServer) -> None:
    stranger = tls_server.pki.client("stranger", ca=trustme.CA())
    assert _live(_client(tls_server, stranger), tls_server.key) == "StatusCode.UNAVAILABLE"


def test_plaintext_is_refused(tls_server: TlsServer) -> None:
    channel = grpc.insecure_channel(tls_server.server.grpc_address)
    try:
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=2)
    finally:
        channel.close()


def test_a_server_that_does_not_trust_the_client_ca_refuses_it(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    """The server's certificate and the clients' CA are separate: a client CA bundle that
    holds another CA refuses certificates from the server's own CA."""
    write_model(tmp_path / "models", "a", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    pki = Pki(tmp_path)
    other = trustme.CA()
    client_ca = tmp_path / "client-ca.pem"
    other.cert_pem.write_to_path(str(client_ca))
    flags = [*pki.flags(mutual=False), "--tls-client-ca-file", str(client_ca)]
    with start_server(tmp_path / "models", *flags) as server:
        tls = TlsServer(server, pki, "")
        assert _live(_client(tls, pki.client("ours")), None) == "StatusCode.UNAVAILABLE"
        assert _live(_client(tls, pki.client("theirs", ca=other)), None) == "OK"
