"""``tuneloop tenants``: create, list, disable, enable, delete (works on the configured store)."""

from __future__ import annotations

import typer

from services import tenants as tenant_ops
from services.store.models import TenantState
from tuneloop.cli.common import emit, opened_platform

app = typer.Typer(help="Manage tenants.", no_args_is_help=True)


@app.command("create")
def create(name: str = typer.Argument(..., help="Tenant name: lowercase letters, digits, '-'.")) -> None:
    """Create a tenant."""
    with opened_platform() as p, p.store.write() as session:
        tenant_ops.create_tenant(session, name)
    typer.echo(f"created tenant {name}; make a key with: tuneloop keys create {name}")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List tenants."""
    with opened_platform() as p, p.store.read() as session:
        rows = [{"name": t.name, "state": t.state, "created_at": t.created_at}
                for t in tenant_ops.list_tenants(session)]
    if as_json:
        emit(rows, True)
        return
    for row in rows:
        typer.echo(f"{row['name']}\t{row['state']}\t{row['created_at']:%Y-%m-%d %H:%M}")


@app.command("disable")
def disable(name: str) -> None:
    """Disable a tenant: its keys stop working until it is enabled again."""
    with opened_platform() as p, p.store.write() as session:
        tenant_ops.set_tenant_state(session, name, TenantState.DISABLED)
    typer.echo(f"disabled tenant {name}")


@app.command("enable")
def enable(name: str) -> None:
    """Enable a disabled tenant."""
    with opened_platform() as p, p.store.write() as session:
        tenant_ops.set_tenant_state(session, name, TenantState.ACTIVE)
    typer.echo(f"enabled tenant {name}")


@app.command("delete")
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    wait_s: float = typer.Option(30.0, "--wait", help="Seconds to wait for running jobs to "
                                 "stop after they are cancelled."),
) -> None:
    """Offboard a tenant: delete it and everything of it (keys, adapters, files, jobs,
    feedback, request log, artifacts). Its jobs are cancelled first. Cannot be undone."""
    from training.deletion import offboard_tenant

    if not yes:
        typer.confirm(f"delete tenant {name} and all its data?", abort=True)
    with opened_platform() as p:
        removed = offboard_tenant(p, name, wait_s=wait_s)
    rows = ", ".join(f"{n} {table}" for table, n in sorted(removed.rows.items()) if n)
    typer.echo(f"deleted tenant {name} ({rows})")
