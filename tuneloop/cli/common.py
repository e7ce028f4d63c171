"""What every CLI command shares: settings from the environment, the platform, error output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from pydantic import ValidationError

from services.errors import TuneloopError
from services.platform import Platform
from services.settings import Settings


def load(**overrides: Any) -> Settings:
    """Settings from the environment; ``overrides`` (a command's options, None = not given) win
    for this run and are validated with the rest."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        typer.echo(f"error: invalid TUNELOOP_* settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc


@contextmanager
def opened_platform() -> Iterator[Platform]:
    """The platform on the configured store; TuneloopErrors become one-line messages, exit 1."""
    try:
        platform = Platform.open(load())
    except TuneloopError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    try:
        if platform.generated_admin_key:
            typer.echo(
                f"generated admin key (shown once, stored hashed): {platform.generated_admin_key}",
                err=True,
            )
        yield platform
    except TuneloopError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    finally:
        platform.close()


def emit(obj: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
