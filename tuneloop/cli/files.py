"""``tuneloop files``: upload, list, show and delete dataset files (on the configured store)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from services.store.models import DatasetFile
from services.tenants import get_tenant
from training.jobs import files
from tuneloop.cli.common import opened_platform

app = typer.Typer(help="Upload and inspect fine-tuning datasets.", no_args_is_help=True)

TENANT = typer.Option(..., "--tenant", "-t", help="Tenant owning the file.")


def _show(row: DatasetFile) -> dict:
    from tuneloop.api.files import file_out

    return file_out(row).model_dump(mode="json")


@app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL or CSV dataset."),
    tenant: str = TENANT,
    task: str = typer.Option(None, help="chat or classification (default: detected)."),
    as_json: bool = typer.Option(False, "--json", help="Print the file object as JSON."),
) -> None:
    """Validate PATH and store it; every problem is listed with its line number.

    Chat: OpenAI fine-tuning JSONL ({"messages": [...]}). Classification: JSONL or CSV with
    text and label. Prints the file id to pass to `tuneloop jobs create --training-file`.
    """
    with opened_platform() as p:
        if path.stat().st_size > p.settings.max_upload_bytes:
            typer.echo(f"error: {path} is over TUNELOOP_MAX_UPLOAD_BYTES "
                       f"({p.settings.max_upload_bytes})", err=True)
            raise typer.Exit(1)
        with p.store.read() as session:
            t = get_tenant(session, tenant)
        row = files.store_file(p, t, path.read_bytes(), path.name, "fine-tune", task)
    if as_json:
        typer.echo(json.dumps(_show(row), indent=2))
        return
    stats = row.stats
    labels = f", labels {stats['label_counts']}" if stats.get("label_counts") else ""
    typer.echo(f"{row.id}\t{row.task}\t{stats['examples']} examples, {stats.get('tokens')} "
               f"tokens{labels}")


@app.command("list")
def list_(tenant: str = TENANT, as_json: bool = typer.Option(False, "--json")) -> None:
    """List the tenant's files, newest first."""
    with opened_platform() as p, p.store.read() as session:
        rows = [_show(r) for r in files.list_files(session, get_tenant(session, tenant))]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['id']}\t{r['task']}\t{r['stats']['examples']} examples\t{r['filename']}")


@app.command("show")
def show(file_id: str, tenant: str = TENANT) -> None:
    """Show a file's stats as JSON."""
    with opened_platform() as p, p.store.read() as session:
        typer.echo(json.dumps(_show(files.get_file(session, get_tenant(session, tenant),
                                                   file_id)), indent=2))


@app.command("delete")
def delete(file_id: str, tenant: str = TENANT) -> None:
    """Delete a file and its content (refused while an unfinished job uses it)."""
    from training.deletion import delete_file

    with opened_platform() as p:
        with p.store.read() as session:
            t = get_tenant(session, tenant)
        delete_file(p, t, file_id)
    typer.echo(f"deleted file {file_id}")
