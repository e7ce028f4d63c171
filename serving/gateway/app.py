"""Assembles the gateway: engines (spawned or remote), dispatch, limits, request log, routes.

``serving_extension(settings)`` plugs it into ``services.app.create_app``. The gateway starts
listening at once; a spawned engine starts in the background and ``/readyz`` (and requests)
answer 503 with Retry-After until it is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from monitoring.metrics import Metrics
from monitoring.request_log import RequestLog
from serving.gateway.dispatch import Dispatcher
from serving.gateway.limits import TenantLimiter
from serving.gateway.resolution import Resolver
from services.settings import Settings

log = logging.getLogger("tuneloop.gateway")


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    limiter: TenantLimiter
    resolver: Resolver
    dispatch: Dispatcher
    request_log: RequestLog | None


def serving_extension(settings: Settings, *, spawn_engine: bool | None = None):  # noqa: ANN201
    """An app extension adding the serving routes and the engine lifecycle."""

    def extend(app: FastAPI) -> None:
        from serving.gateway import routes

        first_new = len(app.router.routes)
        app.include_router(routes.router)
        # The inference routes are matched first: every request otherwise tries each
        # platform route's pattern before reaching them (none of their paths overlap).
        added = app.router.routes[first_new:]
        del app.router.routes[first_new:]
        app.router.routes[0:0] = added
        app.state.startup_hooks.append(
            lambda app_: _gateway_lifespan(app_, settings, spawn_engine)
        )

    return extend


@asynccontextmanager
async def _gateway_lifespan(
    app: FastAPI, settings: Settings, spawn_engine: bool | None
) -> AsyncIterator[None]:
    platform = app.state.platform
    metrics = Metrics()
    request_log = RequestLog.from_settings(platform.store, metrics, settings)
    request_log.start()
    dispatch = Dispatcher(settings, platform, metrics)
    spawn = not settings.engine_urls if spawn_engine is None else spawn_engine
    start_task: asyncio.Task | None = None
    if spawn:
        start_task = asyncio.create_task(dispatch.start_local_engine(), name="engine-start")
    else:
        await dispatch.connect(settings.engine_urls)
    resolver = Resolver(platform.store, platform.base_model_name)
    app.state.gateway = Gateway(
        settings=settings, metrics=metrics,
        limiter=TenantLimiter(settings.tenant_max_concurrency, settings.tenant_rate_per_s),
        resolver=resolver, dispatch=dispatch, request_log=request_log,
    )
    app.state.swapper = dispatch
    dispatch.on_champion_change = resolver.invalidate
    try:
        yield
    finally:
        if start_task is not None and not start_task.done():
            start_task.cancel()
        await dispatch.close()
        request_log.stop()
