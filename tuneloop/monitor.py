"""``tuneloop monitor``: the monitor as its own process, with a job manager for the retrains it
starts, ``/metrics`` and ``/healthz``. No public API: gateways serve the policy and drift routes.
(``tuneloop serve`` runs the same monitor inside the gateway app: ``create_app(monitor=...)``.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from services.platform import Platform
from services.settings import Settings
from tuneloop.api.deps import require_metrics_token
from tuneloop.app import install_error_handlers
from tuneloop.state import AppState, MonitorOptions, open_state


def standalone_app(settings: Settings, options: MonitorOptions | None = None,
                   jobs: dict[str, Any] | None = None) -> FastAPI:
    """The monitor process's app; ``jobs``: options for its job manager."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await run_in_threadpool(Platform.open, settings)
        try:
            async with open_state(platform, monitor=options or MonitorOptions(),
                                  jobs=jobs) as state:
                app.state.tuneloop = state
                yield
        finally:
            platform.close()

    app = FastAPI(title="tuneloop monitor", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    def exposition(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        state: AppState = request.app.state.tuneloop
        require_metrics_token(request, state.platform.settings)
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
