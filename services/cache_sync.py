"""Keep a process's serving caches in step with changes other processes commit.

:class:`ChangeWatcher` polls the store's change counter (services/store/changes.py) and drops
the caches it is given when the counter moves, so a key revoked or a version promoted through
any gateway or the monitor is in force on this one within ``TUNELOOP_SERVING_SYNC_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.store.changes import read_counter
from services.store.db import Store

log = logging.getLogger("tuneloop.cache_sync")


class ChangeWatcher:
    """Polls the counter every ``interval_s`` and calls ``on_change()`` when it moved (and when
    the store cannot be read: dropping caches is the safe side). Run :meth:`run` as a task."""

    def __init__(self, store: Store, on_change: Callable[[], None], interval_s: float) -> None:
        self.store = store
        self.on_change = on_change
        self.interval_s = interval_s
        self.last: int | None = None

    def _read(self) -> int:
        with self.store.read() as session:
            return read_counter(session)

    async def check(self) -> bool:
        """Read the counter once; True (and caches dropped) if it moved since the last check."""
        try:
            counter: int | None = await asyncio.to_thread(self._read)
        except Exception:  # noqa: BLE001 - logged; keep watching
            log.warning("reading serving changes failed; dropping caches", exc_info=True)
            counter = None
        moved = counter is None or (self.last is not None and counter != self.last)
        self.last = counter
        if moved:
            self.on_change()
        return moved

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)
