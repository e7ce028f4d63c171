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
        with pytest.raises(RateLimited, match="2 requests in flight"):
            with limiter.admit("acme"):
                pass
    with limiter.admit("acme"):  # slots are released on exit, also after errors
        pass
    with pytest.raises(ValueError):
        with limiter.admit("acme"):
            raise ValueError("boom")
    with limiter.admit("acme"), limiter.admit("acme"):
        pass
