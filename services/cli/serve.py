"""``tuneloop serve``: the gateway (and, unless engine URLs are set, a local vLLM engine)."""

from __future__ import annotations

import typer

from services.cli.common import load


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        monitor: bool = typer.Option(
            None, "--monitor/--no-monitor",
            help="Run the monitor loop (drift, retraining, promotion) in this process "
            "(default: TUNELOOP_MONITOR_IN_SERVE, true)."),
    ) -> None:
        """Start the platform on the configured settings (embedded defaults: everything local)."""
        import uvicorn

        from monitoring.service import monitor_extension, monitor_in_serve
        from services.app import create_app

        settings = load()
        extensions = []
        try:
            from serving.gateway.app import serving_extension
        except ImportError:
            serving_extension = None
        if serving_extension is not None:
            extensions.append(serving_extension(settings))
        if monitor if monitor is not None else monitor_in_serve(settings):
            extensions.append(monitor_extension(settings))  # after serving: promotions hot-swap
        app_ = create_app(settings, extensions=extensions)
        url = f"http://{settings.host}:{settings.port}"
        typer.echo(
            f"tuneloop listening on {url}\n"
            f"  create a tenant:  curl -X POST {url}/admin/tenants -H 'Authorization: Bearer $ADMIN_KEY' "
            "-d '{\"name\": \"acme\"}'\n"
            f"  or locally:       tuneloop tenants create acme && tuneloop keys create acme\n"
            "  Ctrl-C stops everything.",
        )
        uvicorn.run(app_, host=settings.host, port=settings.port, log_level=settings.log_level)
