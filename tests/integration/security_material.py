"""Credentials for the security tests, made fresh for each run: API keys and their keys
file, an HS256 secret, RS256 and ES256 key pairs and their JWKS, signed tokens, and a CA
with server and client certificates (trustme). Nothing here is a fixed secret."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://issuer.integration.test"
AUDIENCE = "v2-inference"


def new_key() -> str:
    """A key as `python -m server.security new-key` makes them (tested there)."""
    return "v2k_" + secrets.token_urlsafe(32)


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeysFile:
    path: Path
    keys: dict[str, str] = field(default_factory=dict)  # name -> key
    entries: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, models: list[str], **extra: Any) -> str:
        key = new_key()
        self.keys[name] = key
        self.entries.append({"name": name, "sha256": sha256(key), "models": models, **extra})
        self.write()
        return key

    def write(self) -> None:
        self.path.write_text(json.dumps({"keys": self.entries}))  # JSON is YAML


@dataclass
class Signers:
    """An HS256 secret and RS256/ES256 keys, with the files the server reads."""

    directory: Path
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32).hex().encode())
    rsa_key: Any = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def secret_file(self) -> Path:
        path = self.directory / "jwt-secret"
        path.write_bytes(self.secret)
        return path

    @property
    def jwks_file(self) -> Path:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        path = self.directory / "jwks.json"
        keys = [{**rsa_jwk, "kid": "rsa", "use": "sig"}, {**ec_jwk, "kid": "ec", "use": "sig"}]
        path.write_text(json.dumps({"keys": keys}))
        return path

    def flags(self) -> list[str]:
        return [
            "--jwt-secret-file", str(self.secret_file),
            "--jwt-jwks-file", str(self.jwks_file),
            "--jwt-issuer", ISSUER,
            "--jwt-audience", AUDIENCE,
        ]  # fmt: skip

    def token(self, algorithm: str = "HS256", **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "integration",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            "scope": "model:* admin",
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        if algorithm == "HS256":
            return jwt.encode(claims, self.secret, algorithm="HS256")
        key, kid = (self.rsa_key, "rsa") if algorithm == "RS256" else (self.ec_key, "ec")
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})

    def forged(self, algorithm: str = "HS256") -> str:
        """Well-formed, right claims, signed with a key the server does not have."""
        impostor = Signers(self.directory)
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "integration", "exp": now + 600}
        if algorithm == "HS256":
            return jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256")
        key, kid = (impostor.rsa_key, "rsa") if algorithm == "RS256" else (impostor.ec_key, "ec")
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


@dataclass
class Pki:
    """A CA, the server's certificate for 127.0.0.1, and files for both sides."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_pem.write_to_path(str(self.server_key))
        self.server_cert.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    def client(self, name: str, ca: trustme.CA | None = None) -> tuple[Path, Path]:
        """A client certificate and key (from another CA when `ca` is given)."""
        issued = (ca or self.ca).issue_cert(f"{name}@clients.test")
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(b.bytes() for b in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key))
        return cert, key

    def flags(self, mutual: bool = True) -> list[str]:
        flags = ["--tls-cert-file", str(self.server_cert), "--tls-key-file", str(self.server_key)]
        return flags + (["--tls-client-ca-file", str(self.ca_file)] if mutual else [])
