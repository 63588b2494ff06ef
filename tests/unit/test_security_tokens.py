"""JWT bearer tokens: HS256 with a secret, RS256 and ES256 from a JWKS file; every refusal
in exact words; the claim that grants models and admin; remembered tokens and reloads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from server.core.errors import Unauthenticated
from server.security.principal import JWT
from server.security.tokens import TokenConfigError, TokenVerifier, read_jwks

SECRET = b"0123456789abcdef0123456789abcdef-test-secret"
ISSUER, AUDIENCE = "https://issuer.example", "inference"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 600,
        "nbf": now - 10,
        "scope": "model:digits model:text_* admin",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def public_jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, **extra}


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    keys = [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1", alg="ES256")]
    path.write_text(json.dumps({"keys": keys}))
    return path


@pytest.fixture
def verifier(secret_file: Path, jwks_file: Path) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, secret_file=secret_file, jwks_file=jwks_file
    )


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


def rs256(kid: str = "rsa-1", key: Any = RSA_KEY, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), key, algorithm="RS256", headers={"kid": kid})


def es256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})


@pytest.mark.parametrize("make", [hs256, rs256, es256], ids=["HS256", "RS256", "ES256"])
def test_a_valid_token_is_its_subject_with_its_scopes(
    verifier: TokenVerifier, make: Callable[..., str]
) -> None:
    principal = verifier.verify(make())
    assert (principal.kind, principal.name, principal.admin) == (JWT, "alice", True)
    assert principal.models.allows("digits") and principal.models.allows("text_direction")
    assert not principal.models.allows("minilm")


def test_scopes_may_be_a_list_and_grant_nothing_by_default(verifier: TokenVerifier) -> None:
    listed = verifier.verify(hs256(scope=["model:minilm"]))
    assert listed.models.allows("minilm") and not listed.admin
    bare = verifier.verify(hs256(scope=None, sub="bob"))
    assert not bare.models.allows("digits") and not bare.admin


def test_the_scope_claim_is_configurable(secret_file: Path) -> None:
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, secret_file=secret_file, scope_claim="permissions"
    )
    principal = verifier.verify(hs256(scope="admin", permissions=["model:*"]))
    assert principal.models.allows("anything") and not principal.admin


def _refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        verifier.verify(token)
    assert not token or token not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("make", [hs256, rs256, es256], ids=["HS256", "RS256", "ES256"])
def test_refusals_name_what_is_wrong(verifier: TokenVerifier, make: Callable[..., str]) -> None:
    now = int(time.time())
    cases = {
        "the token has expired": make(exp=now - 3600),
        "the token is not valid yet (nbf)": make(nbf=now + 3600),
        "the token is not for this audience (aud)": make(aud="someone-else"),
        "the token is not from the expected issuer (iss)": make(iss="https://evil.example"),
        "the token lacks a required claim (exp, sub, iss, aud)": make(exp=None),
    }
    for message, token in cases.items():
        assert _refusal(verifier, token) == message
    assert _refusal(verifier, make(sub=None)) == (
        "the token lacks a required claim (exp, sub, iss, aud)"
    )
    assert _refusal(verifier, make(aud=None)) == (
        "the token lacks a required claim (exp, sub, iss, aud)"
    )


def test_leeway_admits_a_token_that_expired_just_now(secret_file: Path) -> None:
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, secret_file=secret_file, leeway_s=60)
    now = int(time.time())
    assert verifier.verify(hs256(exp=now - 30)).name == "alice"
    assert _refusal(verifier, hs256(exp=now - 120)) == "the token has expired"
    assert verifier.verify(hs256(nbf=now + 30)).name == "alice"


def test_wrong_signatures_are_refused(verifier: TokenVerifier) -> None:
    forged_hs = jwt.encode(claims(), b"another-secret-that-is-32-bytes-long!", algorithm="HS256")
    assert _refusal(verifier, forged_hs) == "the token's signature does not verify"
    forged_rs = rs256(key=OTHER_RSA_KEY)  # claims kid rsa-1, signed by another key
    assert _refusal(verifier, forged_rs) == "the token's signature does not verify"
    tampered = hs256().rsplit(".", 1)[0] + "." + hs256(sub="mallory").rsplit(".", 1)[1]
    assert _refusal(verifier, tampered) == "the token's signature does not verify"


def test_unsigned_unknown_and_confused_algorithms_are_refused(
    verifier: TokenVerifier, jwks_file: Path
) -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")
    assert _refusal(verifier, unsigned) == (
        "the token's algorithm is not one of ['HS256', 'RS256', 'ES256']"
    )
    assert _refusal(verifier, rs256(kid="nobody")) == "the token's key (kid) is not in the JWKS"
    # An RS256 key used as if it were ES256's:
    es_with_rsa_kid = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    assert _refusal(verifier, es_with_rsa_kid) == "the token's algorithm does not match its key"
    # The classic confusion: HS256 "signed" with the RSA public key as the secret. Only the
    # configured secret verifies HS256, so it fails; without a secret HS256 is not accepted.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    # PyJWT refuses to HMAC with a PEM key, so the token is made by hand.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    confused = f"{head}.{body}.{b64(signature)}"
    assert _refusal(verifier, confused) == "the token's signature does not verify"
    jwks_only = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file)
    assert _refusal(jwks_only, confused) == "the token's algorithm is not one of ['RS256', 'ES256']"


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30", "x" * 100 + ".y.z"]
)
def test_garbage_is_not_a_jwt(verifier: TokenVerifier, token: str) -> None:
    assert _refusal(verifier, token) in (
        "the bearer token is not a well-formed JWT",
        "the token's algorithm is not one of ['HS256', 'RS256', 'ES256']",
    )


def test_a_bad_scope_claim_is_refused(verifier: TokenVerifier) -> None:
    assert _refusal(verifier, hs256(scope={"model": "digits"})) == (
        "the token's 'scope' claim must be a string or a list of strings"
    )


def test_a_remembered_token_is_still_checked_against_its_expiry(
    secret_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time()]
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, secret_file=secret_file, leeway_s=1,
        clock=lambda: now[0],
    )  # fmt: skip
    decodes = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decodes.append(1)
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    token = hs256(exp=int(now[0]) + 60)
    for _ in range(3):
        assert verifier.verify(token).name == "alice"
    assert len(decodes) == 1  # verified once, then remembered
    now[0] += 60  # exp + leeway still ahead: remembered
    verifier.verify(token)
    assert len(decodes) == 1
    now[0] += 2  # past exp + leeway on the verifier's clock: verified afresh
    verifier.verify(token)
    assert len(decodes) == 2


def test_a_reload_forgets_remembered_tokens(tmp_path: Path, secret_file: Path) -> None:
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, secret_file=secret_file)
    token = hs256()
    verifier.verify(token)
    secret_file.write_bytes(b"a-completely-different-secret-of-32-bytes")
    verifier.reload()
    assert _refusal(verifier, token) == "the token's signature does not verify"


def test_configuration_errors(tmp_path: Path, secret_file: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"secret_file": None}, "JWT needs a secret file or a JWKS file"),
        ({"issuer": ""}, "JWT needs an issuer and an audience to check"),
        ({"secret_file": short}, "the JWT secret must be at least 32 bytes"),
        ({"secret_file": tmp_path / "absent"}, "cannot read the JWT secret file"),
    ]
    for overrides, message in cases:
        arguments: dict[str, Any] = {
            "issuer": ISSUER, "audience": AUDIENCE, "secret_file": secret_file, **overrides
        }  # fmt: skip
        with pytest.raises(TokenConfigError, match=message.replace("(", r"\(")):
            TokenVerifier(**arguments)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "the JWKS file is not valid JSON"),
        ('{"keys": []}', 'the JWKS file needs {"keys": [...]} with at least one key'),
        ('{"keys": [1]}', "JWKS keys[0] is not an object"),
        (
            '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}',
            "JWKS keys[0] is a private or symmetric key",
        ),
        ('{"keys": [{"kty": "RSA"}]}', "JWKS keys[0] is not a usable JWK"),
    ],
)
def test_jwks_refusals(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(document)
    with pytest.raises(TokenConfigError) as info:
        read_jwks(path)
    assert str(info.value) == message


def test_jwks_refuses_private_keys_and_other_algorithms(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    private = json.loads(RSAAlgorithm.to_jwk(RSA_KEY))
    path.write_text(json.dumps({"keys": [private]}))
    with pytest.raises(TokenConfigError, match="is a private or symmetric key"):
        read_jwks(path)
    p384 = ec.generate_private_key(ec.SECP384R1())
    path.write_text(json.dumps({"keys": [public_jwk(p384, "p384")]}))
    with pytest.raises(TokenConfigError, match=r"only RS256 \(RSA\) and ES256 \(EC P-256\)"):
        read_jwks(path)
    path.write_text(json.dumps({"keys": [public_jwk(RSA_KEY, "a"), public_jwk(RSA_KEY, "a")]}))
    with pytest.raises(TokenConfigError, match="kid 'a' appears twice"):
        read_jwks(path)


def test_one_key_without_kid_serves_tokens_without_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    jwk = public_jwk(EC_KEY, "only")
    del jwk["kid"]
    path.write_text(json.dumps({"keys": [jwk]}))
    verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, jwks_file=path)
    token = jwt.encode(claims(), EC_KEY, algorithm="ES256")
    assert verifier.verify(token).name == "alice"
