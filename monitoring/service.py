"""Running the monitor in a process: inside the gateway app (``tuneloop serve``, with the
gateway's hot swap and metrics) or standalone (``tuneloop monitor``, with its own ``/metrics``).

Monitor settings read with defaults until ``services/settings.py`` has them:
``monitor_in_serve`` (run the monitor inside ``tuneloop serve``, default true) and
``monitor_interval_s`` (seconds between passes, default 60).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from monitoring.loop import Monitor, MonitorThread, RegistrySwitcher
from monitoring.metrics import Metrics
from services import registry
from services.errors import NotFound
from services.platform import Platform
from services.settings import Settings
from services.store.models import Tenant

log = logging.getLogger("tuneloop.monitor")

DEFAULT_INTERVAL_S = 60.0


def monitor_interval(settings: Settings) -> float:
    return float(getattr(settings, "monitor_interval_s", DEFAULT_INTERVAL_S))


def monitor_in_serve(settings: Settings) -> bool:
    return bool(getattr(settings, "monitor_in_serve", True))


class HotSwapSwitcher(RegistrySwitcher):
    """Switches champions through the gateway of this process: the new version is loaded and
    probed on every engine before the alias switches; the old one is drained and unloaded."""

    def __init__(self, platform: Platform, swapper: Any, loop: asyncio.AbstractEventLoop,
                 timeout_s: float = 600.0):
        super().__init__(platform)
        self.swapper = swapper
        self.loop = loop
        self.timeout_s = timeout_s

    def _prepare(self, tenant: Tenant, name: str, ref: str):
        with self.platform.store.read() as session:
            new = registry.resolve(session, tenant, ref)
            try:
                old = registry.resolve(session, tenant, name)
            except NotFound:
                old = None
        asyncio.run_coroutine_threadsafe(self.swapper.prepare(new), self.loop).result(
            self.timeout_s)
        return old if old is not None and old.version_id != new.version_id else None

    def promote(self, tenant: Tenant, name: str, version: int, reason: str) -> None:
        previous = self._prepare(tenant, name, registry.version_ref(name, version))
        super().promote(tenant, name, version, reason)
        self.loop.call_soon_threadsafe(self.swapper.switched, tenant.id, previous)

    def rollback(self, tenant: Tenant, name: str, reason: str) -> int:
        with self.platform.store.read() as session:
            target = registry.rollback_target(session, tenant, name).version
        previous = self._prepare(tenant, name, registry.version_ref(name, target))
        restored = super().rollback(tenant, name, reason)
        self.loop.call_soon_threadsafe(self.swapper.switched, tenant.id, previous)
        return restored


@asynccontextmanager
async def monitor_lifespan(app: FastAPI, *, interval_s: float | None = None,
                           **options: Any) -> AsyncIterator[Monitor]:
    """For ``app.state.startup_hooks``: a monitor thread for as long as the app runs. Uses the
    gateway's metrics and hot swap when the serving extension runs in the app (its hook must come
    first), and wakes the app's job manager when it creates a job."""
    platform = app.state.platform
    gateway = getattr(app.state, "gateway", None)
    metrics = options.pop("metrics", None) or (gateway.metrics if gateway is not None else None) \
        or getattr(app.state, "monitor_metrics", None) or Metrics()
    swapper = getattr(app.state, "swapper", None)
    if "switcher" not in options and swapper is not None:
        options["switcher"] = HotSwapSwitcher(platform, swapper, asyncio.get_running_loop())

    def wake(_job_id: str) -> None:
        jobs = getattr(app.state, "jobs", None)
        if jobs is not None:
            jobs.wake()

    monitor = Monitor(platform, metrics=metrics, on_job_created=wake, **options)
    thread = MonitorThread(monitor, interval_s or monitor_interval(platform.settings))
    app.state.monitor = monitor
    thread.start()
    try:
        yield monitor
    finally:
        await run_in_threadpool(thread.stop)


def monitor_extension(settings: Settings | None = None, **options: Any):
    """An app extension that runs the monitor while the app runs (add it after the serving
    extension so promotions hot-swap). ``options`` go to :class:`monitoring.loop.Monitor`."""

    def extend(app: FastAPI) -> None:
        app.state.startup_hooks.append(lambda app_: monitor_lifespan(app_, **options))

    return extend


def standalone_app(settings: Settings, **options: Any) -> FastAPI:
    """``tuneloop monitor``: the monitor, a job manager for the jobs it starts, ``/metrics`` and
    ``/healthz``. No public API: gateways serve the policy and drift routes."""
    from training.jobs.manager import JobManager

    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        platform = await run_in_threadpool(Platform.open, settings)
        app.state.platform = platform
        manager = JobManager(platform, concurrency=settings.train_concurrency,
                             stale_after_s=settings.train_job_stale_after_s)
        try:
            async with manager.lifespan(app), monitor_lifespan(app, metrics=metrics, **options):
                yield
        finally:
            platform.close()

    app = FastAPI(title="tuneloop monitor", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/metrics")
    def exposition() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return app
