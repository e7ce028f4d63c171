"""Dispatch: run a resolved request on an engine of the pool, with its adapter loaded.

Owns the engines (spawned :class:`EngineProcess` or remote URLs), their placements and
classifiers. The hot-swap steps are :class:`serving.gateway.engine_swap.EngineSwap`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import anyio
from pydantic import SecretStr

from monitoring.metrics import Metrics
from services import registry
from services.artifacts import artifact_ref
from services.errors import Unavailable
from services.platform import Platform
from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
from services.registry import ResolvedAdapter
from services.settings import Settings
from serving.classify import Classification, Classifier
from serving.engine_client import EngineClient, EngineStream
from serving.engine_process import EngineProcess, EngineState
from serving.gateway.resolution import Target
from serving.placement import (
    AdapterLoadError,
    AdapterPlacement,
    EnginePool,
    EngineSlot,
    PlacementEvent,
)

log = logging.getLogger("tuneloop.dispatch")

class OpenStream:
    """An engine stream held under an engine lease: iterate for SSE lines, then ``aclose()``.

    ``aclose`` is idempotent and finishes under cancellation (a client that hung up): it closes
    the engine connection (vLLM aborts the generation) and returns the lease.
    """

    def __init__(self, stream: EngineStream, lease: AbstractAsyncContextManager) -> None:
        self._stream = stream
        self._lease = lease
        self._closed = False

    def __aiter__(self) -> AsyncIterator[str]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                await self._stream.aclose()
            finally:
                await self._lease.__aexit__(None, None, None)


class Dispatcher:
    """The gateway's one door to the engines."""

    def __init__(self, settings: Settings, platform: Platform, metrics: Metrics) -> None:
        self.settings = settings
        self.platform = platform
        self.metrics = metrics
        self.pool: EnginePool | None = None
        self.processes: list[EngineProcess] = []
        self.classifiers: dict[str, Classifier] = {}
        self._health_task: asyncio.Task | None = None
        self._remote_ready: dict[str, bool] = {}
        self.on_version_failed: Callable[[], None] | None = None  # drop cached resolutions

    # -- engines --------------------------------------------------------------------------

    def _slot(self, name: str, url: str, is_ready: Callable[[], bool]) -> EngineSlot:
        key = self.settings.engine_api_key
        client = EngineClient(url, timeout_s=self.settings.request_timeout_s,
                              api_key=key.get_secret_value() if key else None, label=name)
        placement = AdapterPlacement(
            client, self.settings.max_cpu_loras, engine_name=name, on_event=self._on_event
        )
        self.classifiers[name] = Classifier(client)
        return EngineSlot(name=name, client=client, placement=placement, is_ready=is_ready)

    async def start_local_engine(self) -> None:
        """Spawn one engine; requests get 503 until it is ready. Restarts re-load adapters.

        Without a configured engine key, the engine gets a random one for this run."""
        if self.settings.engine_api_key is None:
            self.settings = self.settings.model_copy(
                update={"engine_api_key": SecretStr(secrets.token_urlsafe(32))})
        proc = EngineProcess(self.settings, model_dir=self.platform.base_model_dir)
        self.processes.append(proc)
        slot = self._slot("local", proc.url, lambda: proc.state is EngineState.READY)
        self.pool = EnginePool([slot])

        async def restarted() -> None:
            self.metrics.engine_restarts.labels("local").inc()
            await slot.placement.reload_all()

        proc.add_restart_callback(restarted)
        self.metrics.engine_up.labels("local").set(0)
        try:
            await proc.start()
        except Exception:
            log.exception("the local engine failed to start; see %s", proc.log_path)
            raise
        self.metrics.engine_up.labels("local").set(1)
        self._health_task = asyncio.create_task(self._watch_health())

    async def connect(self, urls: list[str]) -> None:
        """Use running engines at ``urls``; a background check marks each up or down."""
        slots = []
        for i, url in enumerate(urls):
            name = f"engine-{i}"
            self._remote_ready[name] = False

            def is_ready(n: str = name) -> bool:
                return self._remote_ready[n]

            slots.append(self._slot(name, url, is_ready))
        self.pool = EnginePool(slots)
        await self._check_remote()
        self._health_task = asyncio.create_task(self._watch_health())

    async def _check_remote(self) -> None:
        assert self.pool is not None
        for slot in self.pool.slots:
            if slot.name not in self._remote_ready:
                continue
            up = await slot.client.health()
            if up and not self._remote_ready[slot.name] and slot.placement.loaded:
                await slot.placement.reload_all()  # the engine came back: it lost its adapters
            self._remote_ready[slot.name] = up

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if self._remote_ready:
                    await self._check_remote()
                for slot in self.pool.slots if self.pool else []:
                    self.metrics.engine_up.labels(slot.name).set(1 if slot.is_ready() else 0)
                    self.metrics.adapters_loaded.labels(slot.name).set(len(slot.placement.loaded))
            except Exception:  # keep watching (logged, so BLE001 does not fire)
                log.exception("engine health check failed")

    async def close(self) -> None:
        if self._health_task:
            self._health_task.cancel()
        for proc in self.processes:
            await proc.stop()
        if self.pool is not None:
            await self.pool.aclose()

    async def ready(self) -> tuple[bool, dict]:
        if self.pool is None:
            return False, {"engines": "starting"}
        states = {s.name: s.is_ready() for s in self.pool.slots}
        return any(states.values()), states

    def _on_event(self, event: PlacementEvent) -> None:
        m = self.metrics
        if event.kind in ("load", "reload"):
            m.adapter_loads.labels(event.engine, "ok" if event.ok else "failed").inc()
            if event.ok:
                m.adapter_load_seconds.labels(event.engine).observe(event.seconds)
        elif event.kind == "evict":
            m.adapter_unloads.labels(event.engine, "evicted").inc()
        elif event.kind == "unload":
            m.adapter_unloads.labels(event.engine, "swapped").inc()

    def engines(self) -> EnginePool:
        """The engine pool; raises Unavailable while the engine is starting."""
        if self.pool is None:
            raise Unavailable("the engine is starting; retry shortly", retry_after_s=10)
        return self.pool

    async def adapter_path(self, adapter: ResolvedAdapter | None) -> str | None:
        """How the engines find the adapter: its content key (``artifact:<sha256>``), which each
        engine fetches from the artifact store itself (serving/engine_middleware.py)."""
        return None if adapter is None else artifact_ref(adapter.artifact_key)

    # -- requests -------------------------------------------------------------------------

    async def generate(self, route: str, target: Target, body: dict) -> dict:
        path = await self.adapter_path(target.adapter)
        name = target.adapter.engine_name if target.adapter else None

        async def run(client: EngineClient) -> dict:
            if route == "chat":
                return await client.chat_completions(body)
            return await client.completions(body)

        async with self.refusals(target.adapter):
            return await self.engines().call(name, path, run)

    async def stream(self, route: str, target: Target, body: dict) -> OpenStream:
        """Open the engine stream now (so errors become HTTP errors); the caller must
        ``aclose()`` the result, which ends the engine request and returns the lease."""
        path = await self.adapter_path(target.adapter)
        name = target.adapter.engine_name if target.adapter else None
        lease = self.engines().lease(name, path)
        async with self.refusals(target.adapter):
            slot = await lease.__aenter__()
        try:
            if route == "chat":
                engine_stream = await slot.client.open_chat_stream(body)
            else:
                engine_stream = await slot.client.open_completions_stream(body)
        except BaseException as exc:
            await lease.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return OpenStream(engine_stream, lease)

    @contextlib.asynccontextmanager
    async def refusals(self, adapter: ResolvedAdapter | None) -> AsyncIterator[None]:
        """An engine refusing to load ``adapter`` (:class:`AdapterLoadError`) makes the version
        FAILED in the store, with the reason, and the caller gets a 422 that says what to do;
        every gateway then answers 404 for it (the store's change counter drops their caches)."""
        try:
            yield
        except AdapterLoadError as exc:
            if adapter is None:
                raise
            reason = exc.reason
            failed = await anyio.to_thread.run_sync(self._fail_version, adapter, reason)
            if self.on_version_failed is not None:
                self.on_version_failed()  # this gateway at once; the others at their next poll
            log.warning("%s/%s refused by the engine%s: %s", adapter.tenant, adapter.ref,
                        "; marked failed" if failed else "", reason)
            raise AdapterLoadError(
                f"{adapter.ref} could not be loaded by the engine and is now failed: {reason}. "
                f"Roll back (POST /v1/adapters/{adapter.name}/rollback) or register a fixed "
                "version", param="model") from exc

    def _fail_version(self, adapter: ResolvedAdapter, reason: str) -> bool:
        with self.platform.store.write() as session:
            return registry.fail_version(session, adapter.version_id, reason) is not None

    async def classify(self, target: Target, texts: list[str]) -> list[Classification]:
        adapter = target.adapter
        assert adapter is not None and adapter.labels
        path = await self.adapter_path(adapter)
        template = adapter.prompt_template or DEFAULT_CLASSIFICATION_TEMPLATE
        async with self.refusals(adapter), self.engines().lease(adapter.engine_name, path) as slot:
            return await self.classifiers[slot.name].classify_many(
                adapter.engine_name, template, texts, adapter.labels
            )
