"""Recently resolved API keys, so most requests authenticate without a store read."""

from __future__ import annotations

import time

from services.store.models import Tenant


class KeyCache:
    """Recently resolved keys (by hash) -> tenant, for ``ttl_s`` seconds.

    Saves a store read per request. Revoking a key or disabling a tenant through this process
    clears the cache at once; other processes notice within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}

    def get(self, key_hash: str) -> Tenant | None:
        hit = self._entries.get(key_hash)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        return hit[1]

    def put(self, key_hash: str, tenant: Tenant) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic(), tenant)

    def clear(self) -> None:
        self._entries.clear()
