"""``tuneloop keys``: API keys of a tenant (shown once, stored hashed); on the configured store,
or over HTTP with ``--url`` and the admin key."""

from __future__ import annotations

import typer

from services import tenants as tenant_ops
from tuneloop.cli.common import API_KEY, EXIT_CODES, JSON, URL, emit, opened_platform, stamp
from tuneloop.cli.remote import connect

app = typer.Typer(help="Manage tenant API keys.", no_args_is_help=True, epilog=EXIT_CODES)


@app.command("create")
def create(tenant: str = typer.Argument(..., help="Tenant the key belongs to."),
           as_json: bool = JSON, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Create an API key for TENANT and print it once."""
    if url:
        with connect(url, api_key) as api:
            created = api.post(f"/admin/tenants/{tenant}/keys")
    else:
        with opened_platform() as p, p.store.write() as session:
            row = tenant_ops.create_key(session, tenant)
        created = {"object": "api_key", "id": row.id, "tenant": row.tenant, "prefix": row.prefix,
                   "key": row.key}
    if as_json:
        emit(created)
        return
    typer.echo(created["key"])
    typer.echo(f"key id {created['id']} for tenant {tenant}; store it now, it is not shown again",
               err=True)


@app.command("list")
def list_(tenant: str, as_json: bool = JSON, url: str | None = URL,
          api_key: str | None = API_KEY) -> None:
    """List the keys of TENANT (prefixes only)."""
    if url:
        with connect(url, api_key) as api:
            rows = api.get(f"/admin/tenants/{tenant}/keys")["data"]
    else:
        with opened_platform() as p, p.store.read() as session:
            rows = [{"object": "api_key", "id": r.id, "tenant": tenant, "prefix": r.prefix,
                     "created_at": r.created_at, "revoked_at": r.revoked_at}
                    for r in tenant_ops.list_keys(session, tenant)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        state = f"revoked {stamp(row['revoked_at'], '%Y-%m-%d')}" if row["revoked_at"] else "active"
        typer.echo(f"{row['id']}\t{row['prefix']}...\t{state}")


@app.command("revoke")
def revoke(
    key_id: int = typer.Argument(..., help="Key id (see `tuneloop keys list`)."),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Tenant the key belongs to "
                               "(needed with --url; checked when given)."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Revoke an API key; requests with it get 401 from now on."""
    if url:
        if tenant is None:
            raise typer.BadParameter("missing; over HTTP a key is revoked as "
                                     "/admin/tenants/TENANT/keys/ID", param_hint="'--tenant' / '-t'")
        with connect(url, api_key) as api:
            api.delete(f"/admin/tenants/{tenant}/keys/{key_id}")
    else:
        with opened_platform() as p, p.store.write() as session:
            tenant_ops.revoke_key(session, key_id, tenant)
    typer.echo(f"revoked key {key_id}")
