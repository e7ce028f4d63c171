"""Per-tenant admission: a concurrency cap and a token-bucket rate limit (pure, in-process).

Each gateway replica enforces its own share; N replicas admit up to N times the limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from services.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


@dataclass
class TenantLimiter:
    """``admit(tenant)`` is a context manager: raises RateLimited, else holds one slot."""

    max_concurrency: int
    rate_per_s: float
    burst: float | None = None
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def _bucket(self, tenant: str) -> _Bucket:
        b = self._buckets.get(tenant)
        if b is None:
            b = self._buckets[tenant] = _Bucket(tokens=self.capacity, updated=self.clock())
        return b

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.rate_per_s)

    def in_flight(self, tenant: str) -> int:
        """Requests of ``tenant`` holding a slot now."""
        b = self._buckets.get(tenant)
        return b.in_flight if b is not None else 0

    @contextmanager
    def admit(self, tenant: str):  # noqa: ANN201
        b = self._bucket(tenant)
        now = self.clock()
        b.tokens = min(self.capacity, b.tokens + (now - b.updated) * self.rate_per_s)
        b.updated = now
        if b.in_flight >= self.max_concurrency:
            raise RateLimited(
                f"tenant {tenant!r} has {b.in_flight} requests in flight, the limit is "
                f"{self.max_concurrency} (TUNELOOP_TENANT_MAX_CONCURRENCY); retry shortly",
                retry_after_s=1.0,
            )
        if b.tokens < 1.0:
            wait = (1.0 - b.tokens) / self.rate_per_s
            raise RateLimited(
                f"tenant {tenant!r} is over its rate limit of {self.rate_per_s:g} requests/s "
                "(TUNELOOP_TENANT_RATE_PER_S)",
                retry_after_s=max(1.0, wait),
            )
        b.tokens -= 1.0
        b.in_flight += 1
        try:
            yield
        finally:
            b.in_flight -= 1
