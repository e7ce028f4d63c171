"""Per-tenant admission: concurrency cap and token bucket, with Retry-After."""

from __future__ import annotations

import pytest

from services.errors import RateLimited
from serving.gateway.limits import TenantLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_refills_over_time():
    clock = Clock()
    limiter = TenantLimiter(max_concurrency=10, rate_per_s=2, burst=2, clock=clock)
    for _ in range(2):
        with limiter.admit("acme"):
            pass
    with pytest.raises(RateLimited, match="2 requests/s") as exc:
        with limiter.admit("acme"):
            pass
    assert exc.value.retry_after_s >= 0.5
    with limiter.admit("globex"):  # other tenants are not affected
        pass
    clock.now = 0.5
    with limiter.admit("acme"):
        pass


def test_concurrency_cap_counts_requests_in_flight():
    limiter = TenantLimiter(max_concurrency=2, rate_per_s=1000)
    with limiter.admit("acme"), limiter.admit("acme"):
        with pytest.raises(RateLimited, match="2 sequences in flight"):
            with limiter.admit("acme"):
                pass
    with limiter.admit("acme"):  # slots are released on exit, also after errors
        pass
    with pytest.raises(ValueError):
        with limiter.admit("acme"):
            raise ValueError("boom")
    with limiter.admit("acme"), limiter.admit("acme"):
        pass


def test_a_request_takes_as_many_slots_and_tokens_as_it_has_sequences():
    clock = Clock()
    limiter = TenantLimiter(max_concurrency=8, rate_per_s=10, burst=10, clock=clock)
    with limiter.admit("acme", 6):
        assert limiter.in_flight("acme") == 6
        with pytest.raises(RateLimited, match=r"has 6 sequences in flight .*needs 3"):
            with limiter.admit("acme", 3):
                pass
        with limiter.admit("acme", 2):
            assert limiter.in_flight("acme") == 8
        with limiter.admit("globex", 8):  # another tenant's share is its own
            pass
    assert limiter.in_flight("acme") == 0
    with pytest.raises(RateLimited, match=r"10 requests/s .*costs 8"):  # 6 + 2 of 10 tokens spent
        with limiter.admit("acme", 8):
            pass
    clock.now = 1.0
    with limiter.admit("acme", 100):  # heavier than the cap: runs alone, charged the whole cap
        assert limiter.in_flight("acme") == 8
        with pytest.raises(RateLimited):
            with limiter.admit("acme"):
                pass


def test_check_weight_names_the_setting():
    from services.errors import InvalidInput
    from serving.gateway.limits import check_weight

    check_weight(256, 256, "256 texts")
    with pytest.raises(InvalidInput, match=r"257 sequences \(257 texts\); at most 256 per request "
                                           r"\(TUNELOOP_MAX_REQUEST_SEQUENCES\)"):
        check_weight(257, 256, "257 texts")
