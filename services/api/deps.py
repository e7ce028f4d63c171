"""Request dependencies: the platform, the caller's tenant, the admin check."""

from __future__ import annotations

import time

from fastapi import Request

from services.errors import Forbidden, Unauthorized
from services.platform import Platform
from services.store.models import Tenant
from services.tenants import hash_key, is_admin_key, resolve_key


def platform(request: Request) -> Platform:
    return request.app.state.platform


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key; send 'Authorization: Bearer <key>'")
    return key.strip()


class KeyCache:
    """Recently resolved keys (by hash) -> tenant, for ``ttl_s`` seconds.

    Saves a store read per request. Revoking a key or disabling a tenant through this process
    clears the cache at once; other processes notice within ``ttl_s``.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 10_000):
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


def key_cache(request: Request) -> KeyCache:
    cache = getattr(request.app.state, "key_cache", None)
    if cache is None:
        cache = request.app.state.key_cache = KeyCache()
    return cache


def cached_tenant(request: Request) -> Tenant | None:
    """The caller's tenant when it is known without a store read (else None)."""
    tenant = getattr(request.state, "tenant", None)
    if tenant is None:
        tenant = key_cache(request).get(hash_key(bearer_key(request)))
        if tenant is not None:
            request.state.tenant = tenant
    return tenant


def current_tenant(request: Request) -> Tenant:
    """The tenant owning the bearer key (cached on the request and briefly per process)."""
    tenant = cached_tenant(request)
    if tenant is not None:
        return tenant
    key = bearer_key(request)
    with platform(request).store.read() as session:
        tenant = resolve_key(session, key)
        session.expunge(tenant)
    key_cache(request).put(hash_key(key), tenant)
    request.state.tenant = tenant
    return tenant


def require_admin(request: Request) -> None:
    key = bearer_key(request)
    p = platform(request)
    configured = p.settings.admin_key.get_secret_value() if p.settings.admin_key else None
    with p.store.read() as session:
        if not is_admin_key(session, key, configured):
            if key.startswith("tl-"):
                raise Forbidden("this route needs the admin key, not a tenant key")
            raise Unauthorized("invalid admin key")
