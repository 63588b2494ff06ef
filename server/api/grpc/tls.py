"""TLS and mutual TLS for the gRPC port, with certificates that reload without a restart.

gRPC asks `CertificateFiles.fetch` before each new connection's handshake (grpc's dynamic
SSL credentials). It compares the files' identities (inode, size, modification time) with
those it last loaded and re-reads them when they changed, or when SIGHUP asked for it
(`request_reload`). A new pair is checked with the standard library's `ssl` before gRPC
gets it, so a half-written or mismatched certificate and key leave the old ones serving
(and the failure is logged once per change). Connections already open keep the
certificate they were made with; `--max-connection-age-s` bounds how long that is.

With a client CA bundle, every client must present a certificate signed by it (mutual
TLS); without one, clients are not asked for a certificate.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

from server.security.reloader import fingerprint

log = logging.getLogger(__name__)


class TlsError(ValueError):
    """The certificate, key or client CA bundle is unusable; the message says which."""


class CertificateFiles:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._paths = (cert, key) + ((client_ca,) if client_ca else ())
        self._loaded = fingerprint(self._paths)
        self._forced = False
        self._initial = self._load()  # raises TlsError: a start-up error

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._initial, self.fetch, require_client_authentication=self.mutual
        )

    def request_reload(self) -> None:
        """Re-read the files before the next handshake, changed or not (SIGHUP)."""
        self._forced = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate fetcher: a new configuration, or None to keep the current
        one. Runs in a gRPC thread before each handshake, so it only stats the files
        unless they changed."""
        current = fingerprint(self._paths)
        if current == self._loaded and not self._forced:
            return None
        self._loaded, self._forced = current, False
        try:
            config = self._load()
        except TlsError as exc:
            log.error(
                "certificate reload failed; the previous certificates stay in force",
                extra={"event": "tls_reload_failed", "reason": str(exc)},
            )
            return None
        log.info("certificates reloaded", extra={"event": "tls_reloaded"})
        return config

    def _load(self) -> grpc.ServerCertificateConfiguration:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(
                f"--tls-cert-file and --tls-key-file are not a usable certificate and "
                f"private key (unencrypted PEM, matching each other): {_why(exc)}"
            ) from None
        client_ca = None
        if self.client_ca is not None:
            try:
                context.load_verify_locations(self.client_ca)
                client_ca = self.client_ca.read_bytes()
            except (OSError, ssl.SSLError) as exc:
                raise TlsError(
                    f"--tls-client-ca-file is not a usable PEM bundle: {_why(exc)}"
                ) from None
        try:
            pair = (self.key.read_bytes(), self.cert.read_bytes())
        except OSError as exc:
            raise TlsError(f"cannot read the certificate or key: {_why(exc)}") from None
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=client_ca)


def _why(exc: OSError | ssl.SSLError) -> str:
    """The reason alone: ssl's messages carry no file contents, OSError's strerror none."""
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "invalid PEM"
    return exc.strerror or type(exc).__name__
