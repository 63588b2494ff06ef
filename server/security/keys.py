"""The API keys file: which key belongs to whom, stored as SHA-256 digests only.

```yaml
keys:
  - name: analytics              # shown in logs and errors, never the key itself
    sha256: 3f0a...              # hex SHA-256 of the key: python -m server.security new-key
    models: [digits, "text_*"]   # model names or wildcards; ["*"] for every model
    admin: false                 # may use the repository RPCs (optional; default false)
    rate: 20                     # requests per second (optional; default --rate-limit, 0: none)
    burst: 40                    # bucket size (optional; default --rate-burst, else the rate)
```

Why a plain SHA-256 digest rather than a salted, slow password hash: the keys are
generated, 256 random bits each, so there is nothing to guess and no dictionary to slow
down; a fast digest lets a request's key be found with one dictionary lookup, and someone
who reads the file learns nothing they can send. A key the operator makes up by hand
would need a slow hash; `new-key` makes them, so this one is fine.

The table is replaced whole on reload: a request sees the old file or the new one. A file
that does not parse leaves the old table in force (the reloader logs why).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from server.security.principal import API_KEY, ModelPatterns, Principal, Rate

KEY_PREFIX = "v2k_"  # marks our keys in secret scanners and in logs that leak them anyway
MAX_KEY_LENGTH = 512  # longer credentials are refused before they are hashed
_DIGEST = re.compile(r"[0-9a-f]{64}")
_FIELDS = {"name", "sha256", "models", "admin", "rate", "burst"}


class KeysFileError(ValueError):
    """The keys file is unreadable or malformed; the message names the entry."""


def new_key() -> str:
    """A fresh API key: 256 random bits, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _entry(index: int, raw: Any, default_burst: int) -> tuple[str, Principal]:
    where = f"keys[{index}]"
    if not isinstance(raw, Mapping):
        raise KeysFileError(f"{where}: expected a mapping with name, sha256 and models")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise KeysFileError(f"{where}: unknown field(s) {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise KeysFileError(f"{where}: 'name' must be a non-empty string")
    where = f"key '{name}'"
    sha = raw.get("sha256")
    if not isinstance(sha, str) or not _DIGEST.fullmatch(sha):
        raise KeysFileError(f"{where}: 'sha256' must be 64 lowercase hex digits")
    models = raw.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise KeysFileError(f"{where}: 'models' must be a list of names or wildcards")
    admin = raw.get("admin", False)
    if not isinstance(admin, bool):
        raise KeysFileError(f"{where}: 'admin' must be true or false")
    rate = None
    if "rate" in raw or "burst" in raw:
        per_second, burst = raw.get("rate"), raw.get("burst", default_burst)
        if not isinstance(per_second, int | float) or isinstance(per_second, bool):
            raise KeysFileError(f"{where}: 'rate' must be a number of requests per second")
        if per_second < 0:
            raise KeysFileError(f"{where}: 'rate' must be a number of requests per second")
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise KeysFileError(f"{where}: 'burst' must be a whole number")
        rate = Rate.of(float(per_second), burst) if per_second else Rate(0.0, 0)
    return sha, Principal(API_KEY, name, ModelPatterns(models), admin, rate)


def parse_keys(text: str, default_burst: int = 0) -> dict[str, Principal]:
    """digest -> principal, from the file's text."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise KeysFileError(f"not valid YAML{line}") from None
    if document is None:
        document = {"keys": []}
    if not isinstance(document, Mapping) or set(document) != {"keys"}:
        raise KeysFileError("expected one top-level field, 'keys', holding a list")
    entries = document["keys"] or []
    if not isinstance(entries, list):
        raise KeysFileError("'keys' must be a list")
    table: dict[str, Principal] = {}
    names: set[str] = set()
    for index, raw in enumerate(entries):
        sha, principal = _entry(index, raw, default_burst)
        if principal.name in names:
            raise KeysFileError(f"key '{principal.name}' appears more than once")
        if sha in table:
            raise KeysFileError(f"key '{principal.name}' has the same digest as another key")
        names.add(principal.name)
        table[sha] = principal
    return table


class KeyTable:
    """The keys file in memory; `reload()` re-reads it."""

    def __init__(self, path: Path, default_burst: int = 0) -> None:
        self.path = path
        self._default_burst = default_burst
        self._by_digest: dict[str, Principal] = {}
        self.reload()

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.path,)

    def reload(self) -> None:
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise KeysFileError(f"cannot read the keys file: {exc.strerror}") from None
        self._by_digest = parse_keys(text, self._default_burst)  # one assignment

    def lookup(self, key: str) -> Principal | None:
        if len(key) > MAX_KEY_LENGTH:
            return None
        return self._by_digest.get(digest(key))

    def __len__(self) -> int:
        return len(self._by_digest)
