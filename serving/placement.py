"""Which LoRA adapters each engine has loaded, and which engine serves a request.

:class:`AdapterPlacement` keeps one engine's adapters in line with demand: an adapter is loaded
on first use (concurrent first requests share one load), at most ``capacity`` are kept and the
least recently used idle one is unloaded to make room. ``use(name, path)`` holds a reference for
the duration of a request so an adapter is never unloaded under a running request.
:class:`EnginePool` spreads requests over several engines.

Engine-side names are opaque and immutable per adapter version (``"t3.support.v2"``); a new
version is a new name, so an old name never points at new weights (vLLM prefix-cache safety).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from services.errors import InvalidInput, NotFound, TooLarge, TuneloopError, Unavailable
from serving.engine_client import EngineAdapterMissing, EngineClient

log = logging.getLogger(__name__)
T = TypeVar("T")


class AdapterLoader(Protocol):
    """The two engine calls placement needs (:class:`serving.engine_client.EngineClient`)."""

    async def load_lora_adapter(self, name: str, path: str) -> None: ...

    async def unload_lora_adapter(self, name: str) -> None: ...


class AdapterLoadError(TuneloopError):
    """An engine refused to load an adapter (it answered 4xx: weights it cannot use, a blob
    missing from or corrupt in the artifact store); nothing is remembered as loaded. Asking
    again gets the same answer, so it is a 422, not a retried 503: the gateway marks the
    version FAILED (serving/gateway/dispatch.py)."""

    status = 422
    code = "adapter_load_failed"
    type = "invalid_request_error"

    def __init__(self, message: str, *, reason: str = "", param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.reason = reason or message  # the engine's words, local paths removed


_LOCAL_PATH = re.compile(r"(?<![\w.:/])/[^\s'\",;:]+")


def _without_paths(text: str) -> str:
    """``text`` with absolute paths replaced: an engine's error names its local files, which
    are the operator's business (logs), not the tenant's (responses)."""
    return _LOCAL_PATH.sub("<path>", text)


@dataclass(frozen=True)
class PlacementEvent:
    """What happened to an adapter on an engine, for metrics: ``kind`` is load|unload|evict|reload."""

    kind: str
    engine: str
    adapter: str
    seconds: float = 0.0
    ok: bool = True


EventHook = Callable[[PlacementEvent], None]


@dataclass
class _Entry:
    path: str
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    verified: bool = False  # a probe request succeeded since this load


class AdapterPlacement:
    """Adapters loaded on one engine: lazy single-flight loads, reference counts, LRU unloading.

    ``capacity`` bounds loaded adapters. When every loaded adapter has requests in flight the
    bound is exceeded rather than failing or waiting; the surplus is unloaded as soon as those
    requests finish.
    """

    def __init__(
        self,
        engine: AdapterLoader,
        capacity: int,
        *,
        engine_name: str = "engine",
        on_event: EventHook | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity ({capacity}) must be >= 1")
        self.engine = engine
        self.engine_name = engine_name
        self.capacity = capacity
        self._on_event = on_event
        self._loaded: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._unloading: dict[str, asyncio.Task[None]] = {}
        self._refs: dict[str, int] = {}
        self.in_flight = 0
        """Requests running on this engine through :meth:`use` (adapter or base)."""

    # -- queries ------------------------------------------------------------------------------

    @property
    def loaded(self) -> list[str]:
        """Loaded adapter names, least recently used first."""
        return list(self._loaded)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def holds(self, name: str) -> bool:
        """Loaded or being loaded here (a request for it now waits for that load, no new one)."""
        return name in self._loaded or name in self._loading

    def refs(self, name: str) -> int:
        """Requests currently holding ``name`` through :meth:`use`."""
        return self._refs.get(name, 0)

    def is_verified(self, name: str) -> bool:
        """True if ``name`` is loaded and a probe succeeded since it was (re-)loaded."""
        entry = self._loaded.get(name)
        return entry is not None and entry.verified

    def mark_verified(self, name: str) -> None:
        """Record a successful probe of ``name``; a later re-load (engine restart) clears it."""
        entry = self._loaded.get(name)
        if entry is not None:
            entry.verified = True

    def retire(self, name: str) -> None:
        """Keep ``name`` loaded but make it the first idle adapter evicted when room is needed.

        For a version that stopped being a champion: it stays ready as the rollback target at no
        cost until the capacity is needed by adapters that serve traffic.
        """
        if name in self._loaded:
            self._loaded.move_to_end(name, last=False)

    # -- loading ------------------------------------------------------------------------------

    async def ensure_loaded(self, name: str, path: str) -> bool:
        """Make sure ``name`` (PEFT dir ``path``) is loaded; True if this call triggered the load.

        Concurrent calls for one name share a single engine load. Raises
        :class:`AdapterLoadError` (engine refused: bad weights, rank too large, blob missing...)
        or :class:`Unavailable` (engine down); a failed load is not remembered.
        """
        while True:
            if name in self._unloading:
                await asyncio.shield(self._unloading[name])
                continue
            entry = self._loaded.get(name)
            if entry is not None and entry.path != path:
                # The name now means other content (an adapter deleted and made again under
                # its old name): the engine must drop the old weights and load these.
                await self._unload(name, kind="unload")
                continue
            if entry is not None:
                self._loaded.move_to_end(name)
                return False
            task = self._loading.get(name)
            if task is not None:
                await asyncio.shield(task)
                continue
            # Run the load as its own task so a cancelled first caller does not cancel it for
            # the callers waiting on the same load.
            task = asyncio.create_task(self._load(name, path), name=f"load-{name}")
            task.add_done_callback(_consume_exception)
            self._loading[name] = task
            await asyncio.shield(task)
            return True

    async def _load(self, name: str, path: str, kind: str = "load") -> None:
        try:
            await self._make_room(exclude=name)
            started = time.perf_counter()
            try:
                await self.engine.load_lora_adapter(name, path)
            except Unavailable:
                self._emit(kind, name, time.perf_counter() - started, ok=False)
                raise
            except (InvalidInput, NotFound, TooLarge) as exc:
                # vLLM answers 400 "has already been loaded" when the engine kept an adapter we
                # had forgotten (forget() after an unexplained 404): it is loaded, which is the goal.
                if "already been loaded" not in exc.message:
                    self._emit(kind, name, time.perf_counter() - started, ok=False)
                    raise AdapterLoadError(self._load_failure(name, path, exc),
                                           reason=_without_paths(exc.message)) from exc
            except Exception as exc:
                # Not the adapter's fault as far as anyone can tell: retried like a busy engine.
                self._emit(kind, name, time.perf_counter() - started, ok=False)
                log.warning("engine %s: loading %s failed unexpectedly: %r", self.engine_name, name, exc)
                raise Unavailable(f"engine {self.engine_name} could not load adapter {name!r} "
                                  f"({type(exc).__name__}); retry shortly") from exc
            self._loaded[name] = _Entry(path)
            self._emit(kind, name, time.perf_counter() - started)
        finally:
            self._loading.pop(name, None)

    def _load_failure(self, name: str, path: str, exc: Exception) -> str:
        return (
            f"engine {self.engine_name} could not load adapter {name!r} from {path!r}: "
            f"{getattr(exc, 'message', exc)}; check that it is a PEFT adapter of this base model "
            "with rank <= max_lora_rank (the engine's TUNELOOP_MAX_LORA_RANK), then register it again"
        )

    async def _make_room(self, *, exclude: str) -> None:
        """Unload least recently used idle adapters until a new one fits in ``capacity``."""
        while len(self._loaded) + len(self._loading) > self.capacity:
            victim = next(
                (n for n in self._loaded if n != exclude and self.refs(n) == 0), None
            )
            if victim is None:
                return  # everything is busy: exceed capacity, trimmed in _release
            await self._unload(victim, kind="evict")

    async def _unload(self, name: str, *, kind: str) -> None:
        entry = self._loaded.pop(name, None)
        if entry is None:
            return
        task = asyncio.create_task(self._engine_unload(name, kind), name=f"unload-{name}")
        self._unloading[name] = task
        try:
            await asyncio.shield(task)
        finally:
            self._unloading.pop(name, None)

    async def _engine_unload(self, name: str, kind: str) -> None:
        started = time.perf_counter()
        try:
            await self.engine.unload_lora_adapter(name)
        except Exception as exc:  # noqa: BLE001 - the engine may have forgotten it (restart)
            log.warning("engine %s: unloading %s failed: %s", self.engine_name, name, exc)
            self._emit(kind, name, time.perf_counter() - started, ok=False)
            return
        self._emit(kind, name, time.perf_counter() - started)

    # -- use ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, name: str | None, path: str | None = None) -> AsyncIterator[None]:
        """Hold ``name`` for one request (loading it from ``path`` first if given).

        ``name=None`` counts a base-model request towards :attr:`in_flight` only. The reference
        is taken before loading so the adapter cannot be evicted between load and request.
        """
        self.in_flight += 1
        if name is not None:
            self._refs[name] = self._refs.get(name, 0) + 1
        try:
            if name is not None:
                if path is not None:
                    await self.ensure_loaded(name, path)
                elif name in self._loaded:
                    self._loaded.move_to_end(name)
            yield
        finally:
            self.in_flight -= 1
            if name is not None:
                await self._release(name)

    async def _release(self, name: str) -> None:
        left = self._refs[name] - 1
        if left:
            self._refs[name] = left
            return
        del self._refs[name]
        entry = self._loaded.get(name)
        if entry is not None:
            entry.idle.set()
        if len(self._loaded) > self.capacity:
            await asyncio.shield(self._make_room(exclude=""))

    # -- explicit unloads and recovery ----------------------------------------------------------

    async def unload(self, name: str) -> None:
        """Unload ``name`` now, whatever holds it (use :meth:`drain_and_unload` to wait)."""
        await self._unload(name, kind="unload")

    async def drain_and_unload(self, name: str, timeout_s: float | None = None) -> bool:
        """Stop counting ``name`` as loaded once its in-flight requests end, then unload it.

        Returns False if ``timeout_s`` passed first (the adapter is unloaded anyway). New
        requests for ``name`` during the drain load it again; callers switch aliases first.
        """
        entry = self._loaded.get(name)
        if entry is None:
            return True
        drained = True
        if self.refs(name):
            entry.idle.clear()
            try:
                await asyncio.wait_for(entry.idle.wait(), timeout_s)
            except TimeoutError:
                drained = False
        await self._unload(name, kind="unload")
        return drained

    def forget(self, name: str) -> None:
        """Drop ``name`` from the books without an engine call (the engine lost it)."""
        self._loaded.pop(name, None)

    async def reload_all(self) -> None:
        """Load every remembered adapter again (after an engine restart lost them all).

        Callers of :meth:`ensure_loaded` during the reload wait for it instead of hitting an
        engine that does not know the adapter yet. Adapters that fail are forgotten.
        """
        entries = list(self._loaded.items())
        self._loaded.clear()
        tasks = []
        for name, entry in entries:
            if name in self._loading:
                continue
            # Registered synchronously (no await before) so no request slips in between.
            task = asyncio.create_task(self._load(name, entry.path, "reload"), name=f"reload-{name}")
            task.add_done_callback(_consume_exception)
            self._loading[name] = task
            tasks.append((name, task))
        for name, task in tasks:
            try:
                await asyncio.shield(task)
            except Exception as exc:  # noqa: BLE001 - the others still get re-loaded
                log.error("engine %s: re-loading %s failed: %s", self.engine_name, name, exc)

    def _emit(self, kind: str, name: str, seconds: float = 0.0, *, ok: bool = True) -> None:
        if self._on_event is not None:
            self._on_event(PlacementEvent(kind, self.engine_name, name, seconds, ok))


def _consume_exception(task: asyncio.Task[None]) -> None:
    # Every waiter sees the failure; this only stops asyncio warning when all waiters left.
    if not task.cancelled():
        task.exception()


# -- several engines ----------------------------------------------------------------------------


@dataclass
class EngineSlot:
    """One engine as the pool sees it: a client (see EngineClient) and its placement."""

    name: str
    client: EngineClient
    placement: AdapterPlacement
    is_ready: Callable[[], bool] = lambda: True


class EnginePool:
    """Several engines serving the same base model; picks one per request.

    Among ready engines: reachable (last request got an answer) before not; then an engine that
    holds the adapter (loaded or loading: a cold adapter is loaded by one engine, not by every
    engine its first requests reach), the least busy of those; but when every holder has
    ``spill_after`` more requests in flight than the least busy engine, that engine takes the
    request and loads the adapter too (a hot adapter spreads). No ready engine (a local engine
    starting or restarting): :class:`Unavailable`.
    """

    def __init__(self, slots: list[EngineSlot], *, retry_after_s: float = 5.0,
                 spill_after: int = 8) -> None:
        if not slots:
            raise ValueError("an engine pool needs at least one engine")
        self.slots = slots
        self.retry_after_s = retry_after_s
        self.spill_after = spill_after

    def pick(self, adapter: str | None = None) -> EngineSlot:
        """The engine that should serve a request for ``adapter`` (None: the base model)."""
        ready = [s for s in self.slots if s.is_ready()]
        if not ready:
            raise Unavailable(
                "no engine is ready (starting or restarting); retry shortly",
                retry_after_s=self.retry_after_s,
            )
        # An unreachable engine stays a candidate (last resort) so it is retried once back.
        reachable = [s for s in ready if getattr(s.client, "reachable", True)] or ready

        def busy(slot: EngineSlot) -> int:
            return slot.placement.in_flight

        least_busy = min(reachable, key=busy)
        if adapter is None:
            return least_busy
        holders = [s for s in reachable if s.placement.holds(adapter)]
        if not holders:
            return least_busy
        holder = min(holders, key=busy)
        return least_busy if busy(holder) - busy(least_busy) >= self.spill_after else holder

    @contextlib.asynccontextmanager
    async def lease(self, adapter: str | None = None, path: str | None = None) -> AsyncIterator[EngineSlot]:
        """Pick an engine, make sure ``adapter`` is loaded there and hold it for one request."""
        slot = self.pick(adapter)
        async with slot.placement.use(adapter, path):
            yield slot

    async def call(
        self,
        adapter: str | None,
        path: str | None,
        request: Callable[[EngineClient], Awaitable[T]],
    ) -> T:
        """Run ``request(client)`` under a lease; if the engine forgot the adapter (restart the
        pool did not see, e.g. a remote engine), load it again and retry once."""
        for attempt in (1, 2):
            async with self.lease(adapter, path) as slot:
                try:
                    return await request(slot.client)
                except EngineAdapterMissing:
                    if adapter is None or path is None or attempt == 2:
                        raise
                    slot.placement.forget(adapter)
        raise AssertionError("unreachable")

    async def prepare_everywhere(
        self, name: str, path: str, probe: Callable[[EngineClient], Awaitable[object]]
    ) -> None:
        """Load ``name`` on every ready engine and probe it there, all engines at once (hot swap:
        before the alias switches). Loads and probes already done on an engine are skipped: an
        adapter stays verified until that engine loads it again (restart, eviction)."""
        slots = [s for s in self.slots if s.is_ready()]
        if not slots:
            raise Unavailable("no engine is ready to load the adapter", retry_after_s=self.retry_after_s)

        async def prepare(slot: EngineSlot) -> None:
            if slot.placement.is_verified(name):
                return
            async with slot.placement.use(name, path):
                await probe(slot.client)
                slot.placement.mark_verified(name)

        results = await asyncio.gather(*(prepare(s) for s in slots), return_exceptions=True)
        failed = [(s, r) for s, r in zip(slots, results) if isinstance(r, BaseException)]
        for slot, exc in failed:
            # An engine that stopped answering (not one that refused the adapter) is skipped:
            # it is out of rotation, and loads the version when it is back and asked for it.
            gone = isinstance(exc, Unavailable) and not getattr(slot.client, "reachable", True)
            if not gone:
                raise exc
        if len(failed) == len(slots):
            raise failed[0][1]
        for slot, exc in failed:
            log.warning("engine %s is down; %s is loaded there when it is back: %s",
                        slot.name, name, exc)

    def retire_everywhere(self, name: str) -> None:
        """:meth:`AdapterPlacement.retire` on every engine."""
        for slot in self.slots:
            slot.placement.retire(name)

    async def aclose(self) -> None:
        """Close every engine client."""
        for slot in self.slots:
            await slot.client.aclose()

    async def drain_and_unload_everywhere(self, name: str, timeout_s: float | None = None) -> bool:
        """Drain and unload ``name`` on every engine; False if some drain timed out."""
        results = await asyncio.gather(
            *(s.placement.drain_and_unload(name, timeout_s) for s in self.slots)
        )
        return all(results)

    async def purge_everywhere(self, name: str, timeout_s: float | None = None) -> None:
        """Make every engine drop ``name`` (a deleted version): drained and unloaded where this
        pool loaded it, and unloaded anyway where it did not (another gateway may have loaded
        it on a shared engine; an engine that does not have it answers an error, ignored)."""

        async def purge(slot: EngineSlot) -> None:
            if slot.placement.holds(name):
                await slot.placement.drain_and_unload(name, timeout_s)
                return
            try:
                await slot.client.unload_lora_adapter(name)
            except Exception as exc:  # noqa: BLE001 - best effort: not loaded there, or down
                log.debug("engine %s: unloading deleted %s: %s", slot.name, name, exc)

        await asyncio.gather(*(purge(s) for s in self.slots))
