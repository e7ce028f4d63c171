"""Hot-swap bookkeeping (EngineSwap over the dispatcher) against fake engines (no vLLM): promoting back to the
previous version costs no engine call; only one previous version per adapter stays loaded."""

from __future__ import annotations

import asyncio
import hashlib

from services.registry import ResolvedAdapter
from serving.gateway.dispatch import Dispatcher
from serving.gateway.engine_swap import EngineSwap
from serving.placement import AdapterPlacement, EnginePool, EngineSlot
from tests.support.lora_engine import FakeEngine


class ProbingEngine(FakeEngine):
    """A fake engine that also answers the probe (``/v1/completions``)."""

    def __init__(self) -> None:
        super().__init__(delay_s=0.01)
        self.probes: list[str] = []

    async def completions(self, body: dict, *, timeout_s: float | None = None) -> dict:
        assert timeout_s is not None and body["max_tokens"] == 1
        assert body["model"] in self.loaded, "probed before the load"
        self.probes.append(body["model"])
        return {"choices": [{"text": "x"}]}


def version(n: int, name: str = "support") -> ResolvedAdapter:
    return ResolvedAdapter(tenant="acme", name=name, version=n, version_id=n, task="chat",
                           labels=None, prompt_template=None, artifact_key=hashlib.sha256(f"{name}-v{n}".encode()).hexdigest())


def dispatcher(tmp_path, engines: list[ProbingEngine]) -> EngineSwap:
    d = Dispatcher(settings=None, platform=None, metrics=None)  # type: ignore[arg-type]
    d.pool = EnginePool([EngineSlot(f"e{i}", client=e, placement=AdapterPlacement(e, 8))  # type: ignore[arg-type]
                         for i, e in enumerate(engines)])
    return EngineSwap(d)


def test_promoting_back_and_forth_loads_and_probes_each_version_once(tmp_path):
    engines = [ProbingEngine(), ProbingEngine()]
    d = dispatcher(tmp_path, engines)

    async def run():
        await d.prepare(version(1))
        d.switched(1, None)
        for _ in range(5):  # v1 -> v2 -> v1 -> ...
            await d.prepare(version(2))
            d.switched(1, version(1))
            await d.prepare(version(1))
            d.switched(1, version(2))
        await asyncio.sleep(0.05)  # let any background unload run

    asyncio.run(run())
    for e in engines:
        assert e.calls == [("load", "acme.support.v1"), ("load", "acme.support.v2")]  # no unload
        assert e.probes == ["acme.support.v1", "acme.support.v2"]


def test_only_the_previous_version_is_kept_the_one_before_is_unloaded(tmp_path):
    engines = [ProbingEngine()]
    d = dispatcher(tmp_path, engines)
    placement = d.dispatch.pool.slots[0].placement

    async def run():
        await d.prepare(version(1))
        d.switched(1, None)
        await d.prepare(version(2))
        d.switched(1, version(1))
        assert placement.loaded[0] == "acme.support.v1"  # retired: first to be evicted
        await d.prepare(version(3))
        d.switched(1, version(2))  # v2 is the rollback target now; v1 goes
        await asyncio.sleep(0.1)

    asyncio.run(run())
    assert engines[0].loaded == {"acme.support.v2", "acme.support.v3"}
    assert placement.loaded == ["acme.support.v2", "acme.support.v3"]


def test_removed_versions_are_unloaded_everywhere_and_forgotten(tmp_path):
    engines = [ProbingEngine(), ProbingEngine()]
    d = dispatcher(tmp_path, engines)

    async def run():
        await d.prepare(version(1))
        d.switched(1, None)
        await d.prepare(version(2))
        d.switched(1, version(1))  # v1: the kept rollback target
        task = d.remove(["acme.support.v1"])
        assert task is not None
        await task

    asyncio.run(run())
    for e in engines:
        assert e.loaded == {"acme.support.v2"}
    assert "acme.support.v1" not in d._rollback_targets.values()
