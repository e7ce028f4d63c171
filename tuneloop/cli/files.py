"""``tuneloop files``: upload, list, show and delete dataset files (on the configured store, or
over HTTP with ``--url`` and a tenant's key)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from services.store.models import DatasetFile
from services.tenants import get_tenant
from training.jobs import files
from tuneloop.cli.common import (
    API_KEY,
    EXIT_CODES,
    URL,
    opened_platform,
    required_tenant,
    tenant_option,
)
from tuneloop.cli.remote import connect, quoted

app = typer.Typer(help="Upload and inspect fine-tuning datasets.", no_args_is_help=True,
                  epilog=EXIT_CODES)

TENANT = tenant_option("file")


def _show(row: DatasetFile) -> dict:
    from tuneloop.api.files import file_out

    return file_out(row).model_dump(mode="json")


@app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL or CSV dataset."),
    tenant: str | None = TENANT,
    task: str = typer.Option(None, help="chat or classification (default: detected)."),
    as_json: bool = typer.Option(False, "--json", help="Print the file object as JSON."),
    url: str | None = URL, api_key: str | None = API_KEY,
) -> None:
    """Validate PATH and store it; every problem is listed with its line number.

    Chat: OpenAI fine-tuning JSONL ({"messages": [...]}). Classification: JSONL or CSV with
    text and label. Prints the file id to pass to `tuneloop jobs create --training-file`.
    """
    if url:
        with connect(url, api_key) as api:
            shown = api.upload("/v1/files", path, {"purpose": "fine-tune", "task": task})
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p:
            if path.stat().st_size > p.settings.max_upload_bytes:
                typer.echo(f"error: {path} is over TUNELOOP_MAX_UPLOAD_BYTES "
                           f"({p.settings.max_upload_bytes})", err=True)
                raise typer.Exit(1)
            with p.store.read() as session:
                t = get_tenant(session, owner)
            shown = _show(files.store_file(p, t, path.read_bytes(), path.name, "fine-tune", task))
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    stats = shown["stats"]
    labels = f", labels {stats['label_counts']}" if stats.get("label_counts") else ""
    typer.echo(f"{shown['id']}\t{shown['task']}\t{stats['examples']} examples, "
               f"{stats.get('tokens')} tokens{labels}")


@app.command("list")
def list_(tenant: str | None = TENANT, as_json: bool = typer.Option(False, "--json"),
          url: str | None = URL, api_key: str | None = API_KEY) -> None:
    """List the tenant's files, newest first."""
    if url:
        with connect(url, api_key) as api:
            rows = api.get("/v1/files")["data"]
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.read() as session:
            rows = [_show(r) for r in files.list_files(session, get_tenant(session, owner))]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['id']}\t{r['task']}\t{r['stats']['examples']} examples\t{r['filename']}")


@app.command("show")
def show(file_id: str, tenant: str | None = TENANT, url: str | None = URL,
         api_key: str | None = API_KEY) -> None:
    """Show a file's stats as JSON."""
    if url:
        with connect(url, api_key) as api:
            shown = api.get(f"/v1/files/{quoted(file_id)}")
    else:
        owner = required_tenant(tenant)
        with opened_platform() as p, p.store.read() as session:
            shown = _show(files.get_file(session, get_tenant(session, owner), file_id))
    typer.echo(json.dumps(shown, indent=2))


@app.command("delete")
def delete(file_id: str, tenant: str | None = TENANT, url: str | None = URL,
           api_key: str | None = API_KEY) -> None:
    """Delete a file and its content (refused while an unfinished job uses it)."""
    if url:
        with connect(url, api_key) as api:
            api.delete(f"/v1/files/{quoted(file_id)}")
    else:
        from training.deletion import delete_file

        owner = required_tenant(tenant)
        with opened_platform() as p:
            with p.store.read() as session:
                t = get_tenant(session, owner)
            delete_file(p, t, file_id)
    typer.echo(f"deleted file {file_id}")
