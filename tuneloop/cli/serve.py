"""``tuneloop serve``: the gateway (and, unless engine URLs are set, a local vLLM engine)."""

from __future__ import annotations

import typer

from tuneloop.cli import logs
from tuneloop.cli.common import load


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        monitor: bool = typer.Option(
            None, "--monitor/--no-monitor",
            help="Run the monitor loop (drift, retraining, promotion) in this process "
            "(default: TUNELOOP_MONITOR_IN_SERVE, true)."),
        host: str = typer.Option(
            None, "--host", help="Address to listen on (default: TUNELOOP_HOST, 127.0.0.1)."),
        port: int = typer.Option(
            None, "--port", min=1, max=65535,
            help="Port to listen on (default: TUNELOOP_PORT, 8000)."),
    ) -> None:
        """Start the platform on the configured settings (embedded defaults: everything local)."""
        import uvicorn

        from tuneloop.app import create_app
        from tuneloop.state import MonitorOptions, ServeOptions

        settings = load(host=host, port=port)
        logs.configure_logging(settings.log_level)
        in_process = monitor if monitor is not None else settings.monitor_in_serve
        app_ = create_app(settings, serve=ServeOptions(),
                          monitor=MonitorOptions() if in_process else None)
        url = f"http://{settings.host}:{settings.port}"
        typer.echo(
            f"tuneloop listening on {url}\n"
            f"  create a tenant:  curl -X POST {url}/admin/tenants -H 'Authorization: Bearer $ADMIN_KEY' "
            "-d '{\"name\": \"acme\"}'\n"
            f"  or locally:       tuneloop tenants create acme && tuneloop keys create acme\n"
            "  Ctrl-C stops everything.",
        )
        uvicorn.run(app_, host=settings.host, port=settings.port, log_level=settings.log_level)
