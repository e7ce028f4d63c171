"""``tuneloop adapters``: register, list, show, promote, rollback, delete (on the configured
store, or over HTTP with ``--url`` and a tenant's key).

Promotions made on the store take effect in running gateways on their next request for the
adapter (they read the champion from the store); promote over HTTP to preload it on the engines
first.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import typer

from services import registry
from services.adapter_export import Member, tar_gz_stream
from services.adapter_intake import register_adapter_archive, register_adapter_dir
from services.adapter_validation import ADAPTER_FILES
from services.archive import find_adapter_root
from services.tenants import get_tenant
from tuneloop.cli.common import (
    API_KEY,
    EXIT_CODES,
    JSON,
    URL,
    emit,
    opened_platform,
    required_tenant,
    tenant_option,
)
from tuneloop.cli.remote import connect, quoted

app = typer.Typer(help="Manage LoRA adapters and their versions.", no_args_is_help=True,
                  epilog=EXIT_CODES)

TENANT = tenant_option("adapter")
SWAP_TIMEOUT_S = 300.0
"""A promotion over HTTP loads and probes the version on every engine before it answers."""


@contextmanager
def _archive(path: Path) -> Iterator[Path]:
    """PATH as the .tar.gz ``POST /v1/adapters/{name}/versions`` takes: an archive as it is, a
    directory packed into a temporary file with only the files registration keeps (the rest
    would be dropped by the server after the upload)."""
    if not path.is_dir():
        yield path
        return
    root = find_adapter_root(path)
    with tempfile.TemporaryDirectory(prefix="tuneloop-pack-") as tmp:
        archive = Path(tmp) / f"{path.resolve().name or 'adapter'}.tar.gz"
        with ExitStack() as files, archive.open("wb") as out:
            members = [Member(name, (root / name).stat().st_size,
                              files.enter_context((root / name).open("rb")))
                       for name in ADAPTER_FILES if (root / name).is_file()]
            for chunk in tar_gz_stream(members):
                out.write(chunk)
        yield archive


@app.command("register")
def register(
    name: str = typer.Argument(..., help="Adapter name."),
    path: Path = typer.Argument(..., exists=True, help="PEFT adapter directory or .tar.gz."),
    tenant: str | None = TENANT,
    task: str = typer.Option("chat", help="chat or classification."),
    labels: str = typer.Option(None, help="Comma-separated labels (classification)."),
    prompt_template: str = typer.Option(None, help="Template with {text} (and {labels})."),
    as_json: bool = JSON, url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Validate and register PATH as the next version of NAME (over HTTP a directory is packed
    into a .tar.gz and uploaded)."""
    if url:
        with connect(url, api_key) as api, _archive(path) as archive:
            version = api.upload(f"/v1/adapters/{quoted(name)}/versions", archive,
                                 {"task": task, "labels": labels,
                                  "prompt_template": prompt_template})
    else:
        from tuneloop.api.adapters import version_out

        owner = required_tenant(tenant)
        label_list = [x.strip() for x in labels.split(",")] if labels else None
        with opened_platform() as p:
            fn = register_adapter_dir if path.is_dir() else register_adapter_archive
            row = fn(p, owner, name, path, task=task, labels=label_list,
                     prompt_template=prompt_template)
            version = version_out(name, row).model_dump(mode="json")
    if as_json:
        emit(version)
        return
    typer.echo(f"registered {version['id']} (rank {version['rank']}, "
               f"{version['size_bytes']} bytes)")


def _summary(adapter: dict) -> dict:
    """An adapter object of the API as a ``list`` row: name, task, champion, latest."""
    versions = adapter["versions"]
    return {"name": adapter["name"], "task": adapter["task"],
            "champion": adapter["champion_version"],
            "latest": versions[-1]["version"] if versions else None}


@app.command("list")
def list_(tenant: str | None = TENANT, as_json: bool = JSON, url: str | None = URL,
          api_key: str | None = API_KEY) -> None:
    """List the adapters of a tenant with their champion and latest version."""
    if url:
        with connect(url, api_key) as api:
            adapters = api.get("/v1/adapters")["data"]
        if as_json:
            emit(adapters)
            return
        rows = [_summary(a) for a in adapters]
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.read() as session:
            t = get_tenant(session, owner)
            rows = []
            for a in registry.list_adapters(session, t):
                versions = registry.list_versions(session, a)
                champion = next((v.version for v in versions if v.id == a.champion_version_id),
                                None)
                rows.append({"name": a.name, "task": a.task, "champion": champion,
                             "latest": versions[-1].version if versions else None})
        if as_json:
            emit(rows)
            return
    for r in rows:
        typer.echo(f"{r['name']}\t{r['task']}\tchampion v{r['champion']}\tlatest v{r['latest']}")


@app.command("show")
def show(name: str, tenant: str | None = TENANT, url: str | None = URL,
         api_key: str | None = API_KEY) -> None:
    """Show an adapter's versions, metrics, lineage and champion history as JSON."""
    if url:
        with connect(url, api_key) as api:
            out = api.get(f"/v1/adapters/{quoted(name)}")
    else:
        from tuneloop.api.adapters import adapter_out

        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.read() as session:
            t = get_tenant(session, owner)
            out = adapter_out(session, registry.get_adapter(session, t, name),
                              history=True).model_dump(mode="json")
    typer.echo(json.dumps(out, indent=2))


@app.command("promote")
def promote(
    name: str, version: int = typer.Argument(..., help="Version number N."),
    tenant: str | None = TENANT,
    reason: str = typer.Option(None, help="Why (kept in the history)."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Make version N the champion of NAME."""
    if url:
        with connect(url, api_key) as api:
            api.post(f"/v1/adapters/{quoted(name)}/promote",
                     {"version": version, "reason": reason}, timeout_s=SWAP_TIMEOUT_S)
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.write() as session:
            registry.promote(session, get_tenant(session, owner), name, version, reason)
    typer.echo(f"{registry.version_ref(name, version)} is now the champion of {name}")


@app.command("rollback")
def rollback(name: str, tenant: str | None = TENANT, reason: str = typer.Option(None),
             url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """Switch NAME back to its previous champion."""
    if url:
        with connect(url, api_key) as api:
            champion = api.post(f"/v1/adapters/{quoted(name)}/rollback", {"reason": reason},
                                timeout_s=SWAP_TIMEOUT_S)["champion"]
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.write() as session:
            row = registry.rollback(session, get_tenant(session, owner), name, reason)
            champion = registry.version_ref(name, row.version)
    typer.echo(f"rolled back: {champion} is the champion of {name}")


@app.command("delete")
def delete(
    name: str,
    version: int = typer.Option(None, "--version", "-v", help="Delete only version N (not "
                                "the champion or the rollback target)."),
    tenant: str | None = TENANT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Delete NAME with all its versions, the jobs that trained it, its retrain policy,
    monitor history, request log and feedback; or, with --version, one version. Running
    gateways stop serving it within their sync interval (TUNELOOP_SERVING_SYNC_INTERVAL_S)."""
    if not url:
        required_tenant(tenant)  # before the question
    what = registry.version_ref(name, version) if version is not None else f"adapter {name}"
    if version is None and not yes:
        typer.confirm(f"delete {what} and all its data?", abort=True)
    if url:
        with connect(url, api_key) as api:
            if version is None:
                api.delete(f"/v1/adapters/{quoted(name)}", timeout_s=120.0)
            else:
                api.delete(f"/v1/models/{quoted(registry.version_ref(name, version))}")
    else:
        from training.deletion import delete_adapter, delete_version

        with opened_platform() as p:
            with p.store.read() as session:
                t = get_tenant(session, required_tenant(tenant))
            if version is None:
                delete_adapter(p, t, name)
            else:
                delete_version(p, t, name, version)
    typer.echo(f"deleted {what}")
