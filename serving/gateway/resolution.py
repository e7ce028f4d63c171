"""Model resolution for the gateway: base model, ``name`` (champion) or ``name@vN``.

Champions are read from the store (so promotions by any process take effect) through a short
TTL cache; a promotion through this gateway invalidates the cache at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from services import registry
from services.registry import ResolvedAdapter
from services.store.db import Store
from services.store.models import Tenant


@dataclass(frozen=True)
class Target:
    """What a request runs on: the base model (adapter None) or one adapter version."""

    public_model: str  # what the response's "model" says
    engine_model: str  # what the engine is asked for
    adapter: ResolvedAdapter | None = None


class Resolver:
    def __init__(self, store: Store, base_model_name: str, ttl_s: float = 1.0,
                 max_entries: int = 10_000) -> None:
        self.store = store
        self.base_model_name = base_model_name
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        """Bound on cached (tenant, model) pairs: ``model`` is what clients send, and endless
        spellings of one version (``name@v0001``) must not grow memory."""
        self._cache: dict[tuple[int, str], tuple[float, ResolvedAdapter]] = {}

    def invalidate(self, tenant_id: int | None = None) -> None:
        if tenant_id is None:
            self._cache.clear()
        else:
            for key in [k for k in self._cache if k[0] == tenant_id]:
                self._cache.pop(key, None)

    def cached(self, tenant: Tenant, model: str) -> Target | None:
        """The target without touching the store, when that is possible (else None)."""
        if model == self.base_model_name:
            return Target(public_model=model, engine_model=model)
        hit = self._cache.get((tenant.id, model))
        if hit and time.monotonic() - hit[0] < self.ttl_s:
            resolved = hit[1]
            return Target(public_model=resolved.ref, engine_model=resolved.engine_name, adapter=resolved)
        return None

    def resolve(self, tenant: Tenant, model: str) -> Target:
        """Raises InvalidInput for a malformed ref, NotFound for unknown/foreign adapters."""
        if model == self.base_model_name:
            return Target(public_model=model, engine_model=model)
        key = (tenant.id, model)
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < self.ttl_s:
            resolved = hit[1]
        else:
            with self.store.read() as session:
                resolved = registry.resolve(session, tenant, model)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[key] = (now, resolved)
        return Target(public_model=resolved.ref, engine_model=resolved.engine_name, adapter=resolved)
