"""Per-tenant admission: a concurrency cap and a token-bucket rate limit (pure, in-process).

Both count work, not requests: a request weighs the sequences it asks the engine for (its
classify texts, its prompts x ``n``), so a tenant cannot take everyone's share with a few big
requests. A request heavier than the cap (or the bucket) is charged the whole cap: it runs
only when the tenant has nothing else in flight. Each gateway replica enforces its own share;
N replicas admit up to N times the limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

from services.errors import InvalidInput, RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float
    in_flight: int = 0


@dataclass
class TenantLimiter:
    """``admit(tenant, weight)`` is a context manager: raises RateLimited, else holds
    ``weight`` slots (at most all of them) until it exits."""

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
        """Slots (sequences) ``tenant``'s requests hold now."""
        b = self._buckets.get(tenant)
        return b.in_flight if b is not None else 0

    @contextmanager
    def admit(self, tenant: str, weight: int = 1):  # noqa: ANN201
        b = self._bucket(tenant)
        now = self.clock()
        b.tokens = min(self.capacity, b.tokens + (now - b.updated) * self.rate_per_s)
        b.updated = now
        slots = max(1, min(weight, self.max_concurrency))
        if b.in_flight + slots > self.max_concurrency:
            needs = f"; this request needs {slots} ({weight} sequences)" if weight > 1 else ""
            raise RateLimited(
                f"tenant {tenant!r} has {b.in_flight} sequences in flight (a request counts "
                f"its texts, prompts x n), the limit is {self.max_concurrency} "
                f"(TUNELOOP_TENANT_MAX_CONCURRENCY){needs}; retry shortly",
                retry_after_s=1.0,
            )
        cost = max(1.0, min(float(weight), self.capacity))
        if b.tokens < cost:
            wait = (cost - b.tokens) / self.rate_per_s
            costs = f"; this request costs {cost:g} ({weight} sequences)" if weight > 1 else ""
            raise RateLimited(
                f"tenant {tenant!r} is over its rate limit of {self.rate_per_s:g} requests/s "
                f"(TUNELOOP_TENANT_RATE_PER_S, counted in sequences){costs}",
                retry_after_s=max(1.0, wait),
            )
        b.tokens -= cost
        b.in_flight += slots
        try:
            yield
        finally:
            b.in_flight -= slots


def check_weight(weight: int, limit: int, what: str) -> None:
    """Raise InvalidInput (400) when a request asks for more than ``limit`` sequences;
    ``what`` says how they were counted (``"16 prompts x n=4"``)."""
    if weight > limit:
        raise InvalidInput(
            f"this request asks for {weight} sequences ({what}); at most {limit} per request "
            "(TUNELOOP_MAX_REQUEST_SEQUENCES): split it into smaller requests",
            code="too_many_sequences")
