"""What every CLI command shares: settings from the environment, the platform, error output,
and the options that pick direct mode (the configured store) or HTTP mode (``--url``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from pydantic import ValidationError

from services.errors import TuneloopError
from services.platform import Platform
from services.settings import Settings

URL = typer.Option(
    None, "--url", envvar="TUNELOOP_URL", show_envvar=True,
    help="Talk to the tuneloop server at this URL through its HTTP API (default: work on the "
         "configured store directly).")
API_KEY = typer.Option(
    None, "--api-key", envvar="TUNELOOP_API_KEY", show_envvar=True,
    help="API key for --url: the admin key for tenants and keys, else a tenant's key (the "
         "tenant is the key's).")
JSON = typer.Option(False, "--json", help="Print JSON (over HTTP: the API's objects).")

EXIT_CODES = (
    "Exit codes: 0 ok; 1 other errors, or the job failed or was cancelled; 2 invalid settings "
    "or options; over HTTP also 3 unauthorized (401/403), 4 not found (404), 5 invalid input "
    "(400/409/413/422), 6 server unreachable or unavailable (429/5xx)."
)


def tenant_option(owner: str) -> Any:
    """``--tenant``: needed in direct mode only (over HTTP the key says whose objects)."""
    return typer.Option(None, "--tenant", "-t", help=f"Tenant owning the {owner} (needed "
                        "without --url; over HTTP it is the API key's tenant).")


def required_tenant(tenant: str | None) -> str:
    """``--tenant`` in direct mode, where the store holds every tenant's data."""
    if tenant is None:
        raise typer.BadParameter("missing; name the tenant (the store holds every tenant's "
                                 "data), or use --url with the tenant's --api-key",
                                 param_hint="'--tenant' / '-t'")
    return tenant


def stamp(value: datetime | str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A time from the store (datetime) or the API (ISO 8601 text) as ``fmt``; '-' if none."""
    if value is None:
        return "-"
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when.strftime(fmt)


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


def emit(obj: Any, as_json: bool = True) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, default=str))
