"""The engines' side of a hot swap (:class:`services.hot_swap.Engines`).

A promote loads and probes the new version on every engine, then the alias switches. The version
it replaced stays loaded as the rollback target (retired: first to be evicted when an engine
needs room), so promoting back costs neither a load nor a probe. Only one previous version per
adapter is kept; the one before it is drained and unloaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.registry import ResolvedAdapter
from serving.engine_client import EngineClient
from serving.gateway.dispatch import Dispatcher

log = logging.getLogger("tuneloop.dispatch")

PROBE_TIMEOUT_S = 30.0
"""A hot-swap probe (1 token) that takes longer means the engine is in trouble: do not switch."""


class EngineSwap:
    """Hot-swap bookkeeping over the dispatcher's engines; ``on_champion_change(tenant_id)``
    runs after every switch (the resolver forgets cached champions)."""

    def __init__(self, dispatch: Dispatcher,
                 on_champion_change: Callable[[int | None], None] | None = None) -> None:
        self.dispatch = dispatch
        self.on_champion_change = on_champion_change
        self._background: set[asyncio.Task] = set()
        self._draining: dict[str, asyncio.Task] = {}
        self._incoming: dict[tuple[str, str], str] = {}  # (tenant, adapter) -> prepared version
        self._rollback_targets: dict[tuple[str, str], str] = {}  # (tenant, adapter) -> kept one

    def close(self) -> None:
        for task in list(self._background):
            task.cancel()

    async def prepare(self, adapter: ResolvedAdapter) -> None:
        """Load ``adapter`` on every ready engine and probe it before the alias switches.

        Engines where this version was already probed since it was loaded skip both steps.
        Raises :class:`Unavailable` / :class:`AdapterLoadError` (the version is then FAILED) /
        the probe's engine error; the alias must then not switch.
        """
        draining = self._draining.pop(adapter.engine_name, None)
        if draining is not None:  # promoted back before the old drain finished: keep it loaded
            draining.cancel()
        path = await self.dispatch.adapter_path(adapter)
        assert path is not None  # None only for the base model (adapter=None)
        probe = {"model": adapter.engine_name, "prompt": "ping", "max_tokens": 1, "temperature": 0.0}

        async def run_probe(client: EngineClient) -> None:
            await client.completions(probe, timeout_s=PROBE_TIMEOUT_S)

        async with self.dispatch.refusals(adapter):
            await self.dispatch.engines().prepare_everywhere(adapter.engine_name, path, run_probe)
        self._incoming[(adapter.tenant, adapter.name)] = adapter.engine_name

    def switched(self, tenant_id: int, previous: ResolvedAdapter | None) -> None:
        """After the alias switched: forget cached champions; keep ``previous`` loaded as the
        rollback target and retire the version kept before it (drained, then unloaded)."""
        if self.on_champion_change:
            self.on_champion_change(tenant_id)
        if previous is None or self.dispatch.pool is None:
            return
        key = (previous.tenant, previous.name)
        champion = self._incoming.pop(key, None)
        older = self._rollback_targets.get(key)
        self._rollback_targets[key] = previous.engine_name
        self.dispatch.pool.retire_everywhere(previous.engine_name)
        if older is not None and older not in (previous.engine_name, champion):
            self._drain_and_unload(older)

    def remove(self, engine_names: list[str]) -> asyncio.Task | None:
        """Deleted versions: forget them here and have every engine unload them (in the
        background; the returned task is for tests). None without engines."""
        names = set(engine_names)
        for table in (self._incoming, self._rollback_targets):
            for key in [k for k, v in table.items() if v in names]:
                del table[key]
        for name in names:
            draining = self._draining.pop(name, None)
            if draining is not None:
                draining.cancel()
        pool = self.dispatch.pool
        if pool is None or not names:
            return None

        async def purge() -> None:
            await asyncio.gather(*(pool.purge_everywhere(n, timeout_s=30) for n in sorted(names)))

        task = asyncio.create_task(purge(), name="purge-deleted-versions")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _drain_and_unload(self, engine_name: str) -> None:
        assert self.dispatch.pool is not None
        task = asyncio.create_task(self.dispatch.pool.drain_and_unload_everywhere(engine_name, timeout_s=120))
        self._background.add(task)
        self._draining[engine_name] = task

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if self._draining.get(engine_name) is t:
                del self._draining[engine_name]
            if not t.cancelled() and t.exception() is not None:
                log.warning("unloading %s failed: %s", engine_name, t.exception())

        task.add_done_callback(done)
