"""``tuneloop tenants``: create, list, disable, enable, delete (on the configured store, or over
HTTP with ``--url`` and the admin key)."""

from __future__ import annotations

import typer

from services import tenants as tenant_ops
from services.store.models import Tenant, TenantState
from tuneloop.cli.common import API_KEY, EXIT_CODES, JSON, URL, emit, opened_platform, stamp
from tuneloop.cli.remote import connect

app = typer.Typer(help="Manage tenants.", no_args_is_help=True, epilog=EXIT_CODES)


def _row(t: Tenant) -> dict:
    return {"name": t.name, "state": t.state, "created_at": t.created_at}


@app.command("create")
def create(name: str = typer.Argument(..., help="Tenant name: lowercase letters, digits, '-'."),
           as_json: bool = JSON, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Create a tenant."""
    if url:
        with connect(url, api_key) as api:
            row = api.post("/admin/tenants", {"name": name})
    else:
        with opened_platform() as p, p.store.write() as session:
            row = _row(tenant_ops.create_tenant(session, name))
    if as_json:
        emit(row)
        return
    typer.echo(f"created tenant {name}; make a key with: tuneloop keys create {name}")


@app.command("list")
def list_(as_json: bool = JSON, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """List tenants."""
    if url:
        with connect(url, api_key) as api:
            rows = api.get("/admin/tenants")["data"]
    else:
        with opened_platform() as p, p.store.read() as session:
            rows = [_row(t) for t in tenant_ops.list_tenants(session)]
    if as_json:
        emit(rows)
        return
    for row in rows:
        typer.echo(f"{row['name']}\t{row['state']}\t{stamp(row['created_at'])}")


def _set_state(name: str, state: TenantState, url: str | None, api_key: str | None) -> None:
    if url:
        action = "disable" if state is TenantState.DISABLED else "enable"
        with connect(url, api_key) as api:
            api.post(f"/admin/tenants/{name}/{action}")
    else:
        with opened_platform() as p, p.store.write() as session:
            tenant_ops.set_tenant_state(session, name, state)


@app.command("disable")
def disable(name: str, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Disable a tenant: its keys stop working until it is enabled again."""
    _set_state(name, TenantState.DISABLED, url, api_key)
    typer.echo(f"disabled tenant {name}")


@app.command("enable")
def enable(name: str, url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Enable a disabled tenant."""
    _set_state(name, TenantState.ACTIVE, url, api_key)
    typer.echo(f"enabled tenant {name}")


@app.command("delete")
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait_s: float = typer.Option(30.0, "--wait", help="Seconds to wait for running jobs to "
                                 "stop after they are cancelled (over HTTP the server waits "
                                 "30 s, then says to retry)."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Offboard a tenant: delete it and everything of it (keys, adapters, files, jobs,
    feedback, request log, artifacts). Its jobs are cancelled first. Cannot be undone."""
    if not yes:
        typer.confirm(f"delete tenant {name} and all its data?", abort=True)
    if url:
        with connect(url, api_key) as api:
            removed = api.delete(f"/admin/tenants/{name}", timeout_s=120.0)["rows"]
    else:
        from training.deletion import offboard_tenant

        with opened_platform() as p:
            removed = dict(offboard_tenant(p, name, wait_s=wait_s).rows)
    rows = ", ".join(f"{n} {table}" for table, n in sorted(removed.items()) if n)
    typer.echo(f"deleted tenant {name} ({rows})")
