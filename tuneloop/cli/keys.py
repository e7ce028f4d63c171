"""``tuneloop keys``: API keys of a tenant (shown once, stored hashed)."""

from __future__ import annotations

import typer

from services import tenants as tenant_ops
from tuneloop.cli.common import opened_platform

app = typer.Typer(help="Manage tenant API keys.", no_args_is_help=True)


@app.command("create")
def create(tenant: str = typer.Argument(..., help="Tenant the key belongs to.")) -> None:
    """Create an API key for TENANT and print it once."""
    with opened_platform() as p, p.store.write() as session:
        created = tenant_ops.create_key(session, tenant)
    typer.echo(created.key)
    typer.echo(f"key id {created.id} for tenant {tenant}; store it now, it is not shown again", err=True)


@app.command("list")
def list_(tenant: str) -> None:
    """List the keys of TENANT (prefixes only)."""
    with opened_platform() as p, p.store.read() as session:
        for row in tenant_ops.list_keys(session, tenant):
            state = f"revoked {row.revoked_at:%Y-%m-%d}" if row.revoked_at else "active"
            typer.echo(f"{row.id}\t{row.prefix}...\t{state}")


@app.command("revoke")
def revoke(key_id: int = typer.Argument(..., help="Key id (see `tuneloop keys list`).")) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    with opened_platform() as p, p.store.write() as session:
        tenant_ops.revoke_key(session, key_id)
    typer.echo(f"revoked key {key_id}")
