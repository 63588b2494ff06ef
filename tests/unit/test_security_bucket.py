"""Token buckets under an injected clock: burst, refill, the retry hint, the registry."""

from __future__ import annotations

import pytest

from server.core.errors import RateLimited
from server.security.bucket import Buckets, TokenBucket, refusal
from server.security.principal import API_KEY, EVERY_MODEL, JWT, PEER, Principal, Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_lets_the_burst_through_then_refuses_with_the_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(Rate(4.0, 3), clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.25)  # one token every 1/4 s
    clock.now += 0.125
    assert bucket.take() == pytest.approx(0.125)  # half a token there, half to wait for


def test_it_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(Rate(4.0, 3), clock)
    for _ in range(3):
        bucket.take()
    clock.now += 0.25
    assert bucket.take() == 0.0
    assert bucket.take() > 0
    clock.now += 3600  # a long quiet spell refills to the burst, not beyond
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() > 0


def test_a_refused_request_takes_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(Rate(1.0, 1), clock)
    assert bucket.take() == 0.0
    for _ in range(100):
        assert bucket.take() > 0
    clock.now += 1.0
    assert bucket.take() == 0.0


def test_burst_defaults_to_the_rate_rounded_up() -> None:
    assert Rate.of(0.5) == Rate(0.5, 1)
    assert Rate.of(2.5) == Rate(2.5, 3)
    assert Rate.of(10, 40) == Rate(10, 40)


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(Rate(0.0, 1))


def test_each_principal_has_its_own_bucket_and_its_own_rate() -> None:
    clock = Clock()
    buckets = Buckets(Rate(1.0, 1), clock)
    alice = Principal(API_KEY, "alice", EVERY_MODEL)
    bob = Principal(API_KEY, "bob", EVERY_MODEL, rate=Rate(10.0, 2))
    alice_token = Principal(JWT, "alice", EVERY_MODEL)  # same name, another kind
    assert buckets.for_principal(alice) is buckets.for_principal(alice)
    assert buckets.for_principal(alice).take() == 0.0  # type: ignore[union-attr]
    assert buckets.for_principal(alice).take() > 0  # type: ignore[union-attr]
    assert buckets.for_principal(alice_token).take() == 0.0  # type: ignore[union-attr]
    assert buckets.for_principal(bob).rate == Rate(10.0, 2)  # type: ignore[union-attr]
    unlimited = Principal(API_KEY, "batch", EVERY_MODEL, rate=Rate(0.0, 0))
    assert buckets.for_principal(unlimited) is None


def test_a_changed_rate_gets_a_new_bucket() -> None:
    buckets = Buckets(Rate(1.0, 1), Clock())
    before = buckets.for_principal(Principal(API_KEY, "k", EVERY_MODEL, rate=Rate(1.0, 1)))
    after = buckets.for_principal(Principal(API_KEY, "k", EVERY_MODEL, rate=Rate(5.0, 5)))
    assert before is not after and after is not None and after.rate == Rate(5.0, 5)


def test_no_default_rate_means_no_bucket_for_addresses_and_tokens() -> None:
    buckets = Buckets(Rate(0.0, 0), Clock())
    assert buckets.for_address(PEER, "ipv4:10.0.0.1") is None
    assert buckets.for_principal(Principal(JWT, "sub", EVERY_MODEL)) is None


def test_the_registry_forgets_refilled_buckets_first() -> None:
    clock = Clock()
    buckets = Buckets(Rate(1.0, 1), clock, max_buckets=3)
    busy = buckets.for_address(PEER, "busy")
    assert busy is not None and busy.take() == 0.0  # empty: must be remembered
    buckets.for_address(PEER, "idle-1")
    buckets.for_address(PEER, "idle-2")  # full: forgettable
    buckets.for_address(PEER, "new")
    assert len(buckets) == 2
    assert buckets.for_address(PEER, "busy") is busy


def test_the_refusal_names_the_limit_and_the_principal() -> None:
    bucket = TokenBucket(Rate(2.0, 3), Clock())
    error = refusal(Principal(API_KEY, "ops", EVERY_MODEL), bucket, 0.5)
    assert isinstance(error, RateLimited)
    assert error.retry_after_s == 0.5
    assert str(error) == (
        "rate limit of 2 requests/s (burst 3) for API key 'ops' exceeded; retry after 0.5 s"
    )
