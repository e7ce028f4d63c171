"""Admin routes: tenants and their API keys (admin key required); the operator's read-only
views are in :mod:`tuneloop.api.admin_views`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi import Path as FastAPIPath

from services import tenants
from services.store.models import MAX_ROW_ID, TenantState
from tuneloop.api import admin_views
from tuneloop.api.deps import app_state, platform, require_admin
from tuneloop.api.schemas import KeyOut, ListOut, TenantCreate, TenantOut

router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)], tags=["admin"])
router.include_router(admin_views.router)  # engines, job queue, monitor events (read-only)


def _tenant_out(t) -> TenantOut:  # noqa: ANN001
    return TenantOut(name=t.name, state=t.state, created_at=t.created_at)


@router.post("/tenants", status_code=201)
def create_tenant(body: TenantCreate, request: Request) -> TenantOut:
    with platform(request).store.write() as session:
        return _tenant_out(tenants.create_tenant(session, body.name))


@router.get("/tenants")
def list_tenants(request: Request) -> ListOut:
    with platform(request).store.read() as session:
        return ListOut(data=[_tenant_out(t) for t in tenants.list_tenants(session)])


@router.post("/tenants/{tenant}/disable")
def disable_tenant(tenant: str, request: Request) -> TenantOut:
    with platform(request).store.write() as session:
        out = _tenant_out(tenants.set_tenant_state(session, tenant, TenantState.DISABLED))
    app_state(request).keys.clear()
    return out


@router.post("/tenants/{tenant}/enable")
def enable_tenant(tenant: str, request: Request) -> TenantOut:
    with platform(request).store.write() as session:
        return _tenant_out(tenants.set_tenant_state(session, tenant, TenantState.ACTIVE))


@router.post("/tenants/{tenant}/keys", status_code=201)
def create_key(tenant: str, request: Request) -> KeyOut:
    with platform(request).store.write() as session:
        created = tenants.create_key(session, tenant)
    return KeyOut(id=created.id, tenant=created.tenant, prefix=created.prefix, key=created.key)


@router.get("/tenants/{tenant}/keys")
def list_keys(tenant: str, request: Request) -> ListOut:
    with platform(request).store.read() as session:
        rows = tenants.list_keys(session, tenant)
        return ListOut(
            data=[
                KeyOut(id=r.id, tenant=tenant, prefix=r.prefix, created_at=r.created_at,
                       revoked_at=r.revoked_at)
                for r in rows
            ]
        )


@router.delete("/tenants/{tenant}/keys/{key_id}")
def revoke_key(tenant: str, request: Request,
               key_id: int = FastAPIPath(ge=1, le=MAX_ROW_ID)) -> KeyOut:
    with platform(request).store.write() as session:
        row = tenants.revoke_key(session, key_id, tenant)
        out = KeyOut(id=row.id, tenant=tenant, prefix=row.prefix, created_at=row.created_at,
                     revoked_at=row.revoked_at)
    app_state(request).keys.clear()
    return out
