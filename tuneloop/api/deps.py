"""Request dependencies: the app state and its parts, the caller's tenant, the admin check."""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from services.errors import Forbidden, Unauthorized, Unavailable
from services.platform import Platform
from services.settings import Settings
from services.store.models import Tenant
from services.tenants import hash_key, is_admin_key, resolve_key
from serving.gateway.runtime import Gateway
from tuneloop.state import AppState

__all__ = ["app_state", "authenticate_scope", "bearer_key", "cached_tenant", "current_tenant",
           "gateway", "platform", "require_admin", "require_metrics_token"]


def app_state(request: Request) -> AppState:
    state: AppState | None = request.app.state.tuneloop
    if state is None:
        raise Unavailable("tuneloop is starting; retry in a moment", retry_after_s=1)
    return state


def platform(request: Request) -> Platform:
    return app_state(request).platform


def gateway(request: Request) -> Gateway:
    """The gateway of this app (only apps built with serving have the inference routes)."""
    gw = app_state(request).gateway
    if gw is None:
        raise Unavailable("serving is not enabled in this process", retry_after_s=5)
    return gw


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key; send 'Authorization: Bearer <key>'")
    return key.strip()


def cached_tenant(request: Request) -> Tenant | None:
    """The caller's tenant when it is known without a store read (else None)."""
    tenant: Tenant | None = getattr(request.state, "tenant", None)
    if tenant is None:
        tenant = app_state(request).keys.get(hash_key(bearer_key(request)))
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
    app_state(request).keys.put(hash_key(key), tenant)
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


async def authenticate_scope(scope: Scope, admin: bool) -> None:
    """The key check of a request before its body is read (tuneloop/api/body_limits.py)."""
    request = Request(scope)
    if admin:
        await run_in_threadpool(require_admin, request)
    elif cached_tenant(request) is None:
        await run_in_threadpool(current_tenant, request)


def require_metrics_token(request: Request, settings: Settings) -> None:
    """``/metrics`` needs ``TUNELOOP_METRICS_TOKEN`` (default: the engine key) when one is set."""
    token = settings.metrics_token or settings.engine_api_key
    if token is None:
        return
    header = request.headers.get("authorization", "")
    if not hmac.compare_digest(header.encode(), f"Bearer {token.get_secret_value()}".encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <TUNELOOP_METRICS_TOKEN>' "
                           "(default: the engine key)")
