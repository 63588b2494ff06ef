"""JWT bearer tokens, verified with PyJWT: HS256 with a shared secret, or RS256 and ES256
with public keys from a JWKS file.

A token is accepted when its signature verifies with a configured key of its own `alg`
(the secret only for HS256, JWKS keys only for RS256/ES256: no algorithm confusion), and
it has `iss` equal to the configured issuer, `aud` containing the configured audience,
`exp` in the future and `nbf` (if any) in the past, both within the leeway, and `sub`.
Its subject is the principal's name. The scope claim (default `scope`: a space-separated
string, as OAuth 2.0 writes it, or a list of strings) grants:

    model:<name or wildcard>    the models it may use, as a keys file entry's `models`
    admin                       the repository RPCs

A client sends the same token with every request, so verified tokens are remembered
(bounded; checked against `exp` on each use): a repeat costs a dictionary lookup, not a
signature check. A reload of the secret or the JWKS forgets them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt

from server.core.errors import Unauthenticated
from server.security.principal import JWT, ModelPatterns, Principal

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
ASYMMETRIC = {"RS256": "RSA", "ES256": "EC"}  # algorithm -> the JWK kty it needs
_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
MODEL_SCOPE, ADMIN_SCOPE = "model:", "admin"
CACHE_SIZE = 4096

_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf)"),
    (jwt.InvalidAudienceError, "the token is not for this audience (aud)"),
    (jwt.InvalidIssuerError, "the token is not from the expected issuer (iss)"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.MissingRequiredClaimError, "the token lacks a required claim (exp, sub, iss, aud)"),
    (jwt.DecodeError, "the bearer token is not a well-formed JWT"),
)


class TokenConfigError(ValueError):
    """The secret or JWKS file is unusable; the message says why, never what it holds."""


def read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise TokenConfigError(f"cannot read the JWT secret file: {exc.strerror}") from None
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenConfigError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def read_jwks(path: Path) -> dict[str | None, jwt.PyJWK]:
    """kid -> public key. Private keys are refused: the server never needs one."""
    try:
        document = json.loads(path.read_text())
    except OSError as exc:
        raise TokenConfigError(f"cannot read the JWKS file: {exc.strerror}") from None
    except ValueError:
        raise TokenConfigError("the JWKS file is not valid JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise TokenConfigError('the JWKS file needs {"keys": [...]} with at least one key')
    keys: dict[str | None, jwt.PyJWK] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise TokenConfigError(f"JWKS keys[{index}] is not an object")
        if _PRIVATE_MEMBERS & set(entry):
            raise TokenConfigError(f"JWKS keys[{index}] is a private or symmetric key")
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            raise TokenConfigError(f"JWKS keys[{index}] is not a usable JWK") from None
        if ASYMMETRIC.get(key.algorithm_name) != entry.get("kty"):
            raise TokenConfigError(
                f"JWKS keys[{index}]: only RS256 (RSA) and ES256 (EC P-256) keys are accepted"
            )
        kid = entry.get("kid")
        if kid in keys:
            raise TokenConfigError(f"JWKS keys[{index}]: kid {kid!r} appears twice")
        keys[kid] = key
    return keys


def scopes(value: object, claim: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise Unauthenticated(f"the token's '{claim}' claim must be a string or a list of strings")


class TokenVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        secret_file: Path | None = None,
        jwks_file: Path | None = None,
        leeway_s: float = 30.0,
        scope_claim: str = "scope",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if secret_file is None and jwks_file is None:
            raise TokenConfigError("JWT needs a secret file or a JWKS file")
        if not issuer or not audience:
            raise TokenConfigError("JWT needs an issuer and an audience to check")
        self.secret_file, self.jwks_file = secret_file, jwks_file
        self.issuer, self.audience = issuer, audience
        self.leeway_s = leeway_s
        self.scope_claim = scope_claim
        self._clock = clock
        self._secret: bytes | None = None
        self._jwks: dict[str | None, jwt.PyJWK] = {}
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, exp)
        self.reload()

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.secret_file, self.jwks_file) if p is not None)

    def reload(self) -> None:
        secret = read_secret(self.secret_file) if self.secret_file else None
        jwks = read_jwks(self.jwks_file) if self.jwks_file else {}
        self._secret, self._jwks = secret, jwks
        self._verified = {}

    def verify(self, token: str) -> Principal:
        """The token's principal, or Unauthenticated saying what is wrong with it."""
        remembered = self._verified.get(token)
        if remembered is not None and remembered[1] + self.leeway_s > self._clock():
            return remembered[0]
        claims = self._decode(token)
        principal = self._principal(claims)
        if len(self._verified) >= CACHE_SIZE:
            self._verified = {}
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def _key(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if algorithm == "HS256" and self._secret is not None:
            return self._secret, algorithm
        if algorithm in ASYMMETRIC and self._jwks:
            kid = header.get("kid")
            key = self._jwks.get(kid)
            if key is None and kid is None and len(self._jwks) == 1:
                key = next(iter(self._jwks.values()))
            if key is None:
                raise Unauthenticated("the token's key (kid) is not in the JWKS")
            if key.algorithm_name != algorithm:
                raise Unauthenticated("the token's algorithm does not match its key")
            return key.key, algorithm
        accepted = (["HS256"] if self._secret else []) + (list(ASYMMETRIC) if self._jwks else [])
        raise Unauthenticated(f"the token's algorithm is not one of {accepted}")

    def _decode(self, token: str) -> dict[str, Any]:
        key, algorithm = self._key(token)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            for kind, message in _REFUSALS:
                if isinstance(exc, kind):
                    raise Unauthenticated(message) from None
            raise Unauthenticated("the bearer token is not valid") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("the token's 'sub' claim must be a non-empty string")
        granted = scopes(claims.get(self.scope_claim, ""), self.scope_claim)
        models = [s[len(MODEL_SCOPE) :] for s in granted if s.startswith(MODEL_SCOPE)]
        return Principal(
            JWT, subject, ModelPatterns(m for m in models if m), ADMIN_SCOPE in granted
        )
