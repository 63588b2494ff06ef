"""Finds the credential in a request's metadata and says whose it is.

Accepted forms (one per request):

    authorization: Bearer <JWT>        verified by the TokenVerifier
    authorization: Bearer <API key>    looked up in the KeyTable
    x-api-key: <API key>               likewise

A bearer credential with exactly two dots is taken for a JWT when JWT is configured (our
API keys have none). Anything else is UNAUTHENTICATED with a message that says what was
wrong, never what was sent.
"""

from __future__ import annotations

from collections.abc import Iterable

from server.core.errors import Unauthenticated
from server.security.keys import KeyTable
from server.security.principal import Principal
from server.security.tokens import TokenVerifier

AUTHORIZATION, API_KEY_HEADER = "authorization", "x-api-key"

MISSING = (
    "missing credential: send 'authorization: Bearer <token or API key>' or 'x-api-key: <API key>'"
)


class Authenticator:
    def __init__(self, keys: KeyTable | None, tokens: TokenVerifier | None) -> None:
        if keys is None and tokens is None:
            raise ValueError("an authenticator needs API keys, JWT, or both")
        self.keys = keys
        self.tokens = tokens

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        found: tuple[str, str | bytes] | None = None
        for key, value in metadata:
            if key in (AUTHORIZATION, API_KEY_HEADER):
                if found is not None:
                    raise Unauthenticated(
                        "more than one credential: send one 'authorization' or 'x-api-key'"
                    )
                found = (key, value)
        if found is None:
            raise Unauthenticated(MISSING)
        header, value = found
        if not isinstance(value, str):
            raise Unauthenticated(f"'{header}' must be text")
        if header == API_KEY_HEADER:
            return self._key(value.strip())
        scheme, _, credential = value.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("'authorization' must be 'Bearer <token or API key>'")
        if self.tokens is not None and credential.count(".") == 2:
            return self.tokens.verify(credential)
        return self._key(credential)

    def _key(self, key: str) -> Principal:
        if self.keys is None:
            raise Unauthenticated("API keys are not accepted here; send a JWT bearer token")
        principal = self.keys.lookup(key)
        if principal is None:
            raise Unauthenticated("unknown API key")
        return principal
