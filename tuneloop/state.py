"""The app's state, built once per run of the app by :func:`open_state`, in one order:
platform -> gateway (optional; else, for a monitor, the configured engines) -> hot swap -> job
manager -> monitor (optional, scoring its gate on the engines); stopped in reverse. Routes reach
it through the typed dependencies in :mod:`tuneloop.api.deps`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from monitoring.candidate_eval import ScoringEvaluator
from monitoring.config import MonitorConfig
from monitoring.feedback import FeedbackBatcher
from monitoring.loop import Monitor, MonitorThread
from monitoring.metrics import Metrics
from services.cache_sync import ChangeWatcher
from services.hot_swap import HotSwap
from services.platform import Platform
from services.quotas import feedback_quota
from serving.gateway.dispatch import Dispatcher
from serving.gateway.engine_evaluator import EngineEvaluator
from serving.gateway.parity_engine import GatewayEngine
from serving.gateway.pool_access import PoolAccess
from serving.gateway.runtime import Gateway, open_gateway
from training.jobs.manager import JobManager
from tuneloop.api.key_cache import KeyCache


@dataclass(frozen=True)
class ServeOptions:
    """Run the gateway (engines, inference routes) in this app."""

    spawn_engine: bool | None = None
    """Start a local engine; default: when ``TUNELOOP_ENGINE_URLS`` is empty."""
    request_log: bool = True
    """Record requests (off only for the request log's A/B benchmark)."""


@dataclass(frozen=True)
class MonitorOptions:
    """Run the monitor thread in this app."""

    interval_s: float | None = None
    """Seconds between passes; default ``TUNELOOP_MONITOR_INTERVAL_S``."""
    config: MonitorConfig | None = None
    monitor: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for :class:`monitoring.loop.Monitor` (tests: an evaluator)."""


@dataclass
class AppState:
    platform: Platform
    swap: HotSwap
    jobs: JobManager
    keys: KeyCache
    feedback: FeedbackBatcher
    metrics: Metrics
    """The gateway's metrics when it runs here, else the monitor's own."""
    gateway: Gateway | None = None
    monitor: Monitor | None = None

    def drop_caches(self) -> None:
        """Forget cached keys and model resolutions (another process changed them)."""
        self.keys.clear()
        if self.gateway is not None:
            self.gateway.resolver.invalidate()


@asynccontextmanager
async def open_state(platform: Platform, *, serve: ServeOptions | None = None,
                     monitor: MonitorOptions | None = None,
                     jobs: dict[str, Any] | None = None) -> AsyncIterator[AppState]:
    """Start everything this app runs and stop it when the context ends. ``jobs``: keyword
    arguments for :class:`training.jobs.manager.JobManager` (tests: a runner, concurrency 0)."""
    settings = platform.settings
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        gateway = None
        if serve is not None:
            gateway = await stack.enter_async_context(open_gateway(
                platform, spawn_engine=serve.spawn_engine, request_log=serve.request_log))
        dispatch = gateway.dispatch if gateway is not None else None
        if dispatch is None and monitor is not None and settings.engine_urls:
            # A monitor of its own reaches the engines too: the gate scores there and its
            # retrains get the parity check.
            dispatch = Dispatcher(settings, platform, Metrics())
            stack.push_async_callback(dispatch.close)
            await dispatch.connect(settings.engine_urls)
        swap = HotSwap(platform, gateway.swap, loop) if gateway is not None else HotSwap(platform)
        manager = JobManager(platform, **{
            "switcher": swap,
            # skips the check without serving; scores classification jobs when it serves
            "parity_engine": GatewayEngine(dispatch, loop,
                                           base_model_name=platform.base_model_name),
            "concurrency": settings.train_concurrency,
            "stale_after_s": settings.train_job_stale_after_s,
            **(jobs or {})})
        await stack.enter_async_context(manager.running())
        metrics = gateway.metrics if gateway is not None else Metrics()
        state = AppState(platform=platform, swap=swap, jobs=manager, keys=KeyCache(),
                         feedback=FeedbackBatcher(platform.store,
                                                  quota=feedback_quota(settings)),
                         metrics=metrics,
                         gateway=gateway)
        stack.push_async_callback(state.feedback.close)

        watcher = ChangeWatcher(platform.store, state.drop_caches, settings.serving_sync_interval_s)
        await watcher.check()
        stack.push_async_callback(_cancel, asyncio.create_task(watcher.run(), name="serving-sync"))
        if monitor is not None:
            options: dict[str, Any] = {"evaluator": EngineEvaluator(
                PoolAccess(dispatch, loop, wait_s=60.0, timeout_s=1800.0),
                fallback=ScoringEvaluator(platform)), **monitor.monitor}
            state.monitor = Monitor(platform, metrics=metrics, switcher=swap,
                                    config=monitor.config, on_job_created=lambda _: manager.wake(),
                                    **options)
            thread = MonitorThread(state.monitor,
                                   monitor.interval_s or settings.monitor_interval_s)
            thread.start()
            stack.push_async_callback(run_in_threadpool, thread.stop)
        yield state


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
