"""Request dependencies: the platform, the caller's tenant, the admin check."""

from __future__ import annotations

from fastapi import Request

from services.errors import Forbidden, Unauthorized
from services.platform import Platform
from services.store.models import Tenant
from services.tenants import is_admin_key, resolve_key


def platform(request: Request) -> Platform:
    return request.app.state.platform


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key; send 'Authorization: Bearer <key>'")
    return key.strip()


def current_tenant(request: Request) -> Tenant:
    """The tenant owning the bearer key (cached on the request)."""
    cached = getattr(request.state, "tenant", None)
    if cached is not None:
        return cached
    key = bearer_key(request)
    p = platform(request)
    with p.store.read() as session:
        tenant = resolve_key(session, key)
        session.expunge(tenant)
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
