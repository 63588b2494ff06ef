"""Who is calling: a principal, the models it may use, and the rate it may use them at.

A principal comes from an API key's entry in the keys file, from a verified JWT, or (with
authentication off and rate limits on) from the client's address. Its `name` is what logs
and error messages show; the credential itself is never kept here.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

WILDCARDS = frozenset("*?[")


class ModelPatterns:
    """Model names a principal may use: exact names, or shell-style wildcards (`*`, `?`,
    `[abc]`) matched case-sensitively against the whole name. `*` alone allows every
    model; no patterns allow none."""

    __slots__ = ("_exact", "_regex", "everything", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        self.everything = "*" in self.patterns
        self._exact = frozenset(p for p in self.patterns if not WILDCARDS & set(p))
        wild = [fnmatch.translate(p) for p in self.patterns if WILDCARDS & set(p)]
        self._regex = re.compile("|".join(wild)) if wild else None

    def allows(self, name: str) -> bool:
        if self.everything or name in self._exact:
            return True
        return self._regex is not None and self._regex.match(name) is not None

    def __repr__(self) -> str:
        return f"ModelPatterns({list(self.patterns)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelPatterns) and other.patterns == self.patterns

    def __hash__(self) -> int:
        return hash(self.patterns)


EVERY_MODEL = ModelPatterns(["*"])


@dataclass(frozen=True, slots=True)
class Rate:
    """A token bucket's shape: `per_second` tokens are added each second, up to `burst`.
    A rate of 0 is no limit."""

    per_second: float
    burst: int

    @classmethod
    def of(cls, per_second: float, burst: int = 0) -> Rate:
        """`burst` 0 means the rate rounded up, and at least 1."""
        return cls(per_second, burst or max(1, math.ceil(per_second)))

    def __str__(self) -> str:
        return f"{self.per_second:g} requests/s (burst {self.burst})"


UNLIMITED = Rate(0.0, 0)

# How a principal was recognised; part of its rate-limit bucket's key, so that an API
# key and a token subject of the same name never share a bucket.
API_KEY, JWT, PEER, EXEMPT = "API key", "token subject", "client", "exempt"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # API_KEY, JWT, PEER or EXEMPT
    name: str  # the key's name, the token's `sub`, the client's address
    models: ModelPatterns
    admin: bool = False  # may use the repository RPCs
    rate: Rate | None = None  # None: the server's default (--rate-limit)

    def __str__(self) -> str:
        return f"{self.kind} '{self.name}'"
