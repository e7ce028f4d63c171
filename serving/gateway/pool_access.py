"""The gateway's engine pool from a worker thread: a job thread (the parity check) or the
monitor thread (the gate's scoring) submits coroutines to the app's event loop and waits.

``dispatcher`` is the app's :class:`serving.gateway.dispatch.Dispatcher`: the gateway's own, or
the one a standalone monitor connects to ``TUNELOOP_ENGINE_URLS``; None when this process
reaches no engine (callers then skip the work or do it another way).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serving.gateway.dispatch import Dispatcher
from serving.placement import EnginePool
from training.jobs.parity import EngineUnavailable

T = TypeVar("T")


class PoolAccess:
    """Runs ``make(pool)`` on the app's ``loop`` once an engine of the pool is ready (waited for
    up to ``wait_s``; then :class:`EngineUnavailable`), returning its result within ``timeout_s``."""

    def __init__(self, dispatcher: Dispatcher | None, loop: asyncio.AbstractEventLoop, *,
                 wait_s: float = 180.0, timeout_s: float = 300.0) -> None:
        self.dispatcher = dispatcher
        self.loop = loop
        self.wait_s = wait_s
        self.timeout_s = timeout_s

    @property
    def configured(self) -> bool:
        """Whether this process reaches any engine at all."""
        return self.dispatcher is not None

    def pool(self) -> EnginePool:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self.loop.is_closed() or not self.loop.is_running():
                raise EngineUnavailable("the app is shutting down")
            dispatcher = self.dispatcher
            if dispatcher is None:
                raise EngineUnavailable("serving is not enabled in this process (no gateway)")
            pool = dispatcher.pool
            if pool is not None and any(slot.is_ready() for slot in pool.slots):
                return pool
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"no engine was ready within {self.wait_s:.0f} s")
            time.sleep(1.0)

    def run(self, make: Callable[[EnginePool], Awaitable[T]], timeout_s: float | None = None) -> T:
        pool = self.pool()

        async def call() -> T:
            return await make(pool)

        try:
            future = asyncio.run_coroutine_threadsafe(call(), self.loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            raise EngineUnavailable(f"the app is shutting down ({exc})") from exc
        return future.result(timeout_s or self.timeout_s)

    def unload(self, engine_name: str) -> None:
        """Unload ``engine_name`` from every engine (after its requests finish, 30 s at most)."""
        dispatcher = self.dispatcher
        if dispatcher is None or dispatcher.pool is None or self.loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(
            dispatcher.pool.drain_and_unload_everywhere(engine_name, timeout_s=30),
            self.loop).result(self.timeout_s)
