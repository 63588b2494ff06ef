"""Token buckets: the rate limit of each principal, or of each client address.

A bucket holds up to `burst` tokens and gains `rate` tokens a second; each request takes
one. A full bucket lets `burst` requests through at once, then `rate` a second. An empty
one answers how long until the next token, which becomes the client's retry hint.

Buckets live in the process that serves the request: with `--workers N`, each worker has
its own, so a client whose connections land on k workers gets up to k times its rate
(docs/security.md). The registry is bounded: past `max_buckets` it forgets the buckets
that have refilled (forgetting a full bucket changes nothing), and if that is not enough,
all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server.core.errors import RateLimited
from server.security.principal import Principal, Rate

Clock = Callable[[], float]
MAX_BUCKETS = 100_000


class TokenBucket:
    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(self, rate: Rate, clock: Clock = time.monotonic) -> None:
        if rate.per_second <= 0 or rate.burst < 1:
            raise ValueError(f"a token bucket needs a positive rate and burst, not {rate}")
        self.rate = rate
        self.burst = float(rate.burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there is one
        (and nothing is taken)."""
        now = self._clock()
        tokens = self._tokens + (now - self._last) * self.rate.per_second
        if tokens > self.burst:
            tokens = self.burst
        self._last = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate.per_second

    def full(self) -> bool:
        elapsed = self._clock() - self._last
        return self._tokens + elapsed * self.rate.per_second >= self.burst


class Buckets:
    """One bucket per principal (by kind and name) or per client address, made on first
    use. A principal's own rate wins over `default`; a rate of 0 has no bucket."""

    def __init__(
        self, default: Rate, clock: Clock = time.monotonic, max_buckets: int = MAX_BUCKETS
    ) -> None:
        self.default = default
        self._clock = clock
        self._max = max_buckets
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def for_principal(self, principal: Principal) -> TokenBucket | None:
        rate = self.default if principal.rate is None else principal.rate
        if rate.per_second <= 0:
            return None
        key = (principal.kind, principal.name)
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:  # new, or the keys file changed its rate
            bucket = self._add(key, rate)
        return bucket

    def for_address(self, kind: str, address: str) -> TokenBucket | None:
        if self.default.per_second <= 0:
            return None
        key = (kind, address)
        bucket = self._buckets.get(key)
        return self._add(key, self.default) if bucket is None else bucket

    def _add(self, key: tuple[str, str], rate: Rate) -> TokenBucket:
        if len(self._buckets) >= self._max:
            self._buckets = {k: b for k, b in self._buckets.items() if not b.full()}
            if len(self._buckets) >= self._max:
                self._buckets.clear()
        bucket = self._buckets[key] = TokenBucket(rate, self._clock)
        return bucket

    def __len__(self) -> int:
        return len(self._buckets)


def refusal(who: object, bucket: TokenBucket, retry_after_s: float) -> RateLimited:
    """The error for a request that found `who`'s bucket empty."""
    return RateLimited(
        f"rate limit of {bucket.rate} for {who} exceeded; retry after {retry_after_s:.3g} s",
        retry_after_s,
    )
