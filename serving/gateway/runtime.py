"""The gateway's runtime: engines (spawned or remote), dispatch, limits, resolver, request log,
started and stopped together by :func:`open_gateway`.

The gateway answers at once; a spawned engine starts in the background and ``/readyz`` (and
requests) answer 503 with Retry-After until it is up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from monitoring.metrics import Metrics
from monitoring.request_log import RequestLog
from services.platform import Platform
from services.settings import Settings
from serving.gateway.background import TaskWatch
from serving.gateway.dispatch import Dispatcher
from serving.gateway.engine_swap import EngineSwap
from serving.gateway.limits import TenantLimiter
from serving.gateway.resolution import Resolver

log = logging.getLogger("tuneloop.gateway")


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    limiter: TenantLimiter
    resolver: Resolver
    dispatch: Dispatcher
    swap: EngineSwap
    request_log: RequestLog | None
    tasks: TaskWatch
    """Background tasks whose failure makes the gateway unready (``/readyz`` says why)."""


@asynccontextmanager
async def open_gateway(platform: Platform, *, spawn_engine: bool | None = None,
                       request_log: bool = True) -> AsyncIterator[Gateway]:
    """Run the gateway while the context is open. ``spawn_engine``: start a local engine
    (default: when ``engine_urls`` is empty); ``request_log=False`` records no requests."""
    settings = platform.settings
    metrics = Metrics()
    log_writer = RequestLog.from_settings(platform.store, metrics, settings) if request_log \
        else None
    if log_writer is not None:
        log_writer.start()
    dispatch = Dispatcher(settings, platform, metrics)
    spawn = not settings.engine_urls if spawn_engine is None else spawn_engine
    start_task: asyncio.Task | None = None
    tasks = TaskWatch()
    if spawn:
        start_task = tasks.watch(asyncio.create_task(dispatch.start_local_engine(),
                                                     name="engine-start"), "the local engine")
    else:
        await dispatch.connect(settings.engine_urls)
    resolver = Resolver(platform.store, platform.base_model_name)
    swap = EngineSwap(dispatch, on_champion_change=resolver.invalidate)
    dispatch.on_version_failed = resolver.invalidate
    try:
        yield Gateway(
            settings=settings, metrics=metrics,
            limiter=TenantLimiter(settings.tenant_max_concurrency, settings.tenant_rate_per_s),
            resolver=resolver, dispatch=dispatch, swap=swap, request_log=log_writer, tasks=tasks,
        )
    finally:
        if start_task is not None and not start_task.done():
            start_task.cancel()
        swap.close()
        await dispatch.close()
        if log_writer is not None:
            log_writer.stop()
