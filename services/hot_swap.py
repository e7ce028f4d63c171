"""Changing an adapter's champion: the one hot swap used by the promote/rollback routes, a job's
``auto_promote`` and the monitor.

With engines (a gateway in this process), the new version is loaded and probed on every engine
before the alias switches in the store; afterwards the engines keep the replaced version as the
rollback target. Without engines only the store changes (other gateways pick the change up
through their resolver cache). A failed load or probe raises and the champion does not change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from services import registry
from services.errors import NotFound
from services.platform import Platform
from services.registry import ResolvedAdapter
from services.store.models import Tenant

T = TypeVar("T")


class Engines(Protocol):
    """The engines' side of a swap (serving's dispatcher)."""

    async def prepare(self, adapter: ResolvedAdapter) -> None:
        """Load and probe ``adapter`` everywhere; raise when it cannot serve."""
        ...

    def switched(self, tenant_id: int, previous: ResolvedAdapter | None) -> None:
        """The alias switched: forget cached champions, retire ``previous``."""
        ...


class ChampionSwitcher(Protocol):
    """Changes an adapter's champion from a worker thread (jobs, the monitor)."""

    def promote(self, tenant: Tenant, name: str, version: int, reason: str) -> None: ...

    def rollback(self, tenant: Tenant, name: str, reason: str) -> int: ...


class HotSwap:
    """Promote and roll back, with the engines' hot swap when ``engines`` is given.

    Routes call the ``*_async`` methods on the app's loop; worker threads call ``promote`` /
    ``rollback``, which run the swap on ``loop`` (the loop the engines live on).
    """

    def __init__(self, platform: Platform, engines: Engines | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, *, timeout_s: float = 600.0) -> None:
        if engines is not None and loop is None:
            raise ValueError("HotSwap with engines needs the event loop they run on")
        self.platform = platform
        self.engines = engines
        self.loop = loop
        self.timeout_s = timeout_s

    # -- from the event loop ------------------------------------------------------------------

    async def promote_async(self, tenant: Tenant, name: str, version: int,
                            reason: str | None) -> None:
        def change() -> int:
            with self.platform.store.write() as session:
                return registry.promote(session, tenant, name, version, reason).version

        await self._swap(tenant, name, version, change)

    async def rollback_async(self, tenant: Tenant, name: str, reason: str | None) -> int:
        def target() -> int:
            with self.platform.store.read() as session:
                return registry.rollback_target(session, tenant, name).version

        def change() -> int:
            with self.platform.store.write() as session:
                return registry.rollback(session, tenant, name, reason).version

        return await self._swap(tenant, name, await asyncio.to_thread(target), change)

    async def _swap(self, tenant: Tenant, name: str, version: int,
                    change: Callable[[], int]) -> int:
        if self.engines is None:
            return await asyncio.to_thread(change)
        new, old = await asyncio.to_thread(self._resolve, tenant, name, version)
        await self.engines.prepare(new)
        restored = await asyncio.to_thread(change)
        previous = old if old is not None and old.version_id != new.version_id else None
        self.engines.switched(tenant.id, previous)
        return restored

    def _resolve(self, tenant: Tenant, name: str,
                 version: int) -> tuple[ResolvedAdapter, ResolvedAdapter | None]:
        with self.platform.store.read() as session:
            new = registry.resolve(session, tenant, registry.version_ref(name, version))
            try:
                old = registry.resolve(session, tenant, name)
            except NotFound:
                old = None
        return new, old

    # -- from worker threads (ChampionSwitcher) -----------------------------------------------

    def promote(self, tenant: Tenant, name: str, version: int, reason: str) -> None:
        if self.engines is None:
            with self.platform.store.write() as session:
                registry.promote(session, tenant, name, version, reason)
            return
        self._on_loop(self.promote_async(tenant, name, version, reason))

    def rollback(self, tenant: Tenant, name: str, reason: str) -> int:
        if self.engines is None:
            with self.platform.store.write() as session:
                return registry.rollback(session, tenant, name, reason).version
        return self._on_loop(self.rollback_async(tenant, name, reason))

    def _on_loop(self, swap: Coroutine[Any, Any, T]) -> T:
        assert self.loop is not None  # checked in __init__ when engines are given
        return asyncio.run_coroutine_threadsafe(swap, self.loop).result(self.timeout_s)
