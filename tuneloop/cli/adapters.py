"""``tuneloop adapters``: register, list, show, promote, rollback, delete (on the configured
store).

Promotions made here take effect in running gateways on their next request for the adapter
(they read the champion from the store); promote over HTTP to preload it on the engines first.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from services import registry
from services.adapter_intake import register_adapter_archive, register_adapter_dir
from services.tenants import get_tenant
from tuneloop.cli.common import emit, opened_platform

app = typer.Typer(help="Manage LoRA adapters and their versions.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", "-t", help="Tenant owning the adapter.")


@app.command("register")
def register(
    name: str = typer.Argument(..., help="Adapter name."),
    path: Path = typer.Argument(..., exists=True, help="PEFT adapter directory or .tar.gz."),
    tenant: str = TENANT,
    task: str = typer.Option("chat", help="chat or classification."),
    labels: str = typer.Option(None, help="Comma-separated labels (classification)."),
    prompt_template: str = typer.Option(None, help="Template with {text} (and {labels})."),
) -> None:
    """Validate and register PATH as the next version of NAME."""
    label_list = [x.strip() for x in labels.split(",")] if labels else None
    with opened_platform() as p:
        fn = register_adapter_dir if path.is_dir() else register_adapter_archive
        row = fn(p, tenant, name, path, task=task, labels=label_list, prompt_template=prompt_template)
        typer.echo(f"registered {registry.version_ref(name, row.version)} (rank {row.rank}, "
                   f"{row.size_bytes} bytes)")


@app.command("list")
def list_(tenant: str = TENANT, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the adapters of a tenant with their champion and latest version."""
    with opened_platform() as p, p.store.read() as session:
        t = get_tenant(session, tenant)
        rows = []
        for a in registry.list_adapters(session, t):
            versions = registry.list_versions(session, a)
            champion = next((v.version for v in versions if v.id == a.champion_version_id), None)
            rows.append({"name": a.name, "task": a.task, "champion": champion,
                         "latest": versions[-1].version if versions else None})
    if as_json:
        emit(rows, True)
        return
    for r in rows:
        typer.echo(f"{r['name']}\t{r['task']}\tchampion v{r['champion']}\tlatest v{r['latest']}")


@app.command("show")
def show(name: str, tenant: str = TENANT) -> None:
    """Show an adapter's versions, metrics, lineage and champion history as JSON."""
    from tuneloop.api.adapters import adapter_out

    with opened_platform() as p, p.store.read() as session:
        t = get_tenant(session, tenant)
        out = adapter_out(session, registry.get_adapter(session, t, name), history=True)
    typer.echo(json.dumps(out.model_dump(mode="json"), indent=2))


@app.command("promote")
def promote(
    name: str, version: int = typer.Argument(..., help="Version number N."), tenant: str = TENANT,
    reason: str = typer.Option(None, help="Why (kept in the history)."),
) -> None:
    """Make version N the champion of NAME."""
    with opened_platform() as p, p.store.write() as session:
        registry.promote(session, get_tenant(session, tenant), name, version, reason)
    typer.echo(f"{registry.version_ref(name, version)} is now the champion of {name}")


@app.command("rollback")
def rollback(name: str, tenant: str = TENANT, reason: str = typer.Option(None)) -> None:
    """Switch NAME back to its previous champion."""
    with opened_platform() as p, p.store.write() as session:
        row = registry.rollback(session, get_tenant(session, tenant), name, reason)
    typer.echo(f"rolled back: {registry.version_ref(name, row.version)} is the champion of {name}")


@app.command("delete")
def delete(
    name: str,
    version: int = typer.Option(None, "--version", "-v", help="Delete only version N (not "
                                "the champion or the rollback target)."),
    tenant: str = TENANT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Delete NAME with all its versions, the jobs that trained it, its retrain policy,
    monitor history, request log and feedback; or, with --version, one version. Running
    gateways stop serving it within their sync interval (TUNELOOP_SERVING_SYNC_INTERVAL_S)."""
    from training.deletion import delete_adapter, delete_version

    what = registry.version_ref(name, version) if version is not None else f"adapter {name}"
    if version is None and not yes:
        typer.confirm(f"delete {what} and all its data?", abort=True)
    with opened_platform() as p:
        with p.store.read() as session:
            t = get_tenant(session, tenant)
        if version is None:
            delete_adapter(p, t, name)
        else:
            delete_version(p, t, name, version)
    typer.echo(f"deleted {what}")
