"""``tuneloop engine``: one engine host (what the chart's engine Deployment runs).

The vLLM OpenAI server for the base model with LoRA enabled, the tuneloop engine middleware in
front of it (the engine key on every route, adapters fetched from the artifact store by content
key into a bounded local cache), configured by the usual ``TUNELOOP_*`` settings. The process
becomes vLLM (exec), so signals and exit codes are the server's own; the engine that
``tuneloop serve`` spawns runs the same command.
"""

from __future__ import annotations

import ipaddress
import os

import typer

from tuneloop.cli.common import load


def register(app: typer.Typer) -> None:
    @app.command("engine")
    def engine(
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: all)."),
        port: int = typer.Option(None, "--port", min=1, max=65535,
                                 help="Port to listen on (default: TUNELOOP_ENGINE_PORT, 8100)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the command and exit."),
    ) -> None:
        """Run one vLLM engine host for the base model (refuses requests without the engine key)."""
        from serving.engine_process import EngineProcess, engine_environment

        settings = load()
        model_dir = settings.resolved_base_model
        if not (model_dir / "config.json").is_file():
            typer.echo(f"error: base model directory {model_dir} does not exist or has no "
                       "config.json; run `tuneloop models import-default` or set "
                       "TUNELOOP_BASE_MODEL", err=True)
            raise typer.Exit(1)
        if settings.engine_api_key is None and not _is_loopback(host):
            typer.echo(f"error: refusing to listen on {host} without an engine key; set "
                       "TUNELOOP_ENGINE_API_KEY (the same on gateways, the monitor and engines)",
                       err=True)
            raise typer.Exit(2)
        process = EngineProcess(settings, host=host, port=port or settings.engine_port,
                                model_dir=model_dir)
        argv = process.command
        if dry_run:
            typer.echo(" ".join(argv))
            return
        typer.echo(f"tuneloop engine: {model_dir.name} on http://{host}:{process.port}", err=True)
        os.execve(argv[0], argv, engine_environment(settings))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
