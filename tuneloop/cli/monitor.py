"""``tuneloop monitor``: the monitor loop as its own process (one per deployment), with a job
manager for the retrains it starts and Prometheus ``/metrics`` on TUNELOOP_MONITOR_METRICS_PORT.

``tuneloop serve`` runs the same monitor inside the gateway by default; run this command instead
when gateways are scaled out (and turn the in-gateway monitor off there).
"""

from __future__ import annotations

import json

import typer

from tuneloop.cli import logs
from tuneloop.cli.common import load, opened_platform


def register(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor(
        interval: float = typer.Option(
            None, "--interval", min=1.0,
            help="Seconds between passes (default: TUNELOOP_MONITOR_INTERVAL_S or 60)."),
        once: bool = typer.Option(
            False, "--once", help="Run one pass over every adapter with a policy, print what "
            "it did as JSON and exit (no server, no job manager: jobs it starts are queued)."),
        host: str = typer.Option(
            None, "--host", help="Address to serve /metrics on (default: TUNELOOP_HOST, "
            "127.0.0.1)."),
        port: int = typer.Option(
            None, "--port", min=1, max=65535,
            help="Port to serve /metrics on (default: TUNELOOP_MONITOR_METRICS_PORT, 9100)."),
    ) -> None:
        """Watch every adapter with a retrain policy: drift and quality reports, retraining,
        gated promotion and rollback. Serves /metrics and /healthz."""
        if once:
            from dataclasses import asdict

            from monitoring.loop import Monitor

            with opened_platform() as platform:
                cycles = Monitor(platform).run_once()
            typer.echo(json.dumps([asdict(c) for c in cycles], indent=2, default=str))
            return
        import uvicorn

        from tuneloop.monitor import standalone_app
        from tuneloop.state import MonitorOptions

        settings = load(host=host, monitor_metrics_port=port)
        logs.configure_logging(settings.log_level)
        every = interval or settings.monitor_interval_s
        typer.echo(f"tuneloop monitor: a pass every {every:g} s; metrics on "
                   f"http://{settings.host}:{settings.monitor_metrics_port}/metrics")
        uvicorn.run(standalone_app(settings, MonitorOptions(interval_s=every)), host=settings.host,
                    port=settings.monitor_metrics_port, log_level=settings.log_level)
