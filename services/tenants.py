"""Tenants, their API keys and the admin key. Keys are random, shown once, stored as sha256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.errors import Conflict, NotFound, Unauthorized
from services.names import NameKind, check_name
from services.store.models import AdminKey, ApiKey, Tenant, TenantState, utcnow

TENANT_KEY_PREFIX = "tl-"
ADMIN_KEY_PREFIX = "tla-"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CreatedKey:
    id: int
    tenant: str
    key: str  # the only time the clear key exists
    prefix: str


def create_tenant(session: Session, name: str) -> Tenant:
    check_name(name, NameKind.TENANT)
    tenant = Tenant(name=name, state=TenantState.ACTIVE)
    session.add(tenant)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"tenant {name!r} already exists", param="name") from exc
    return tenant


def get_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise NotFound(f"tenant {name!r} does not exist; create it with `tuneloop tenants create`")
    return tenant


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.id)))


def set_tenant_state(session: Session, name: str, state: TenantState) -> Tenant:
    tenant = get_tenant(session, name)
    tenant.state = state
    return tenant


def create_key(session: Session, tenant_name: str) -> CreatedKey:
    tenant = get_tenant(session, tenant_name)
    key = new_key(TENANT_KEY_PREFIX)
    row = ApiKey(tenant_id=tenant.id, prefix=key[:10], key_hash=hash_key(key))
    session.add(row)
    session.flush()
    return CreatedKey(id=row.id, tenant=tenant.name, key=key, prefix=row.prefix)


def list_keys(session: Session, tenant_name: str) -> list[ApiKey]:
    tenant = get_tenant(session, tenant_name)
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant.id)))


def revoke_key(session: Session, key_id: int, tenant_name: str | None = None) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or (tenant_name and session.get_one(Tenant, row.tenant_id).name != tenant_name):
        raise NotFound(f"API key {key_id} does not exist")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def resolve_key(session: Session, key: str) -> Tenant:
    """The active tenant owning ``key``; raises Unauthorized for unknown, revoked or disabled."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("invalid API key; create one with `tuneloop keys create <tenant>`")
    tenant = session.get(Tenant, row.tenant_id)
    if tenant is None or tenant.state != TenantState.ACTIVE:
        raise Unauthorized("the tenant of this API key is disabled; an admin can enable it")
    return tenant


def ensure_admin_key(session: Session, configured: str | None) -> str | None:
    """Returns a newly generated admin key (to print once) when none is configured or stored."""
    if configured:
        return None
    if session.scalar(select(AdminKey.id).limit(1)) is not None:
        return None
    key = new_key(ADMIN_KEY_PREFIX)
    session.add(AdminKey(key_hash=hash_key(key)))
    session.flush()
    return key


def is_admin_key(session: Session, key: str, configured: str | None) -> bool:
    if configured:
        return hmac.compare_digest(key.encode(), configured.encode())
    return session.scalar(select(AdminKey.id).where(AdminKey.key_hash == hash_key(key))) is not None
