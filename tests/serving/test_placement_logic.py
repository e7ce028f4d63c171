"""Adapter placement and engine picking against a fake engine (no vLLM)."""

from __future__ import annotations

import asyncio

import pytest

from services.errors import Unavailable
from serving.engine_client import EngineAdapterMissing
from serving.placement import AdapterLoadError, AdapterPlacement, EnginePool, EngineSlot
from tests.support.lora_engine import FakeEngine


def loads(engine: FakeEngine) -> list[str]:
    return [name for kind, name in engine.calls if kind == "load"]


def test_concurrent_first_requests_trigger_one_load():
    engine = FakeEngine(delay_s=0.05)
    placement = AdapterPlacement(engine, capacity=4)

    async def run():
        return await asyncio.gather(*(placement.ensure_loaded("t1.a.v1", "/a") for _ in range(20)))

    results = asyncio.run(run())
    assert loads(engine) == ["t1.a.v1"]
    assert results.count(True) == 1
    assert placement.loaded == ["t1.a.v1"]


def test_lru_adapter_is_unloaded_at_capacity():
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=2)

    async def run():
        await placement.ensure_loaded("a", "/a")
        await placement.ensure_loaded("b", "/b")
        await placement.ensure_loaded("a", "/a")  # a is now the most recent
        await placement.ensure_loaded("c", "/c")

    asyncio.run(run())
    assert placement.loaded == ["a", "c"]
    assert engine.loaded == {"a", "c"}
    assert ("unload", "b") in engine.calls


def test_adapter_in_use_is_never_evicted():
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=1)

    async def run():
        async with placement.use("a", "/a"):
            await placement.ensure_loaded("b", "/b")  # over capacity: a is busy
            assert engine.loaded == {"a", "b"}
        # a's request finished: the surplus (the LRU idle one, a) goes
        return placement.loaded

    assert asyncio.run(run()) == ["b"]
    assert engine.loaded == {"b"}


def test_failed_load_is_clear_and_not_remembered():
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=2, engine_name="e0")

    async def run():
        with pytest.raises(AdapterLoadError, match="could not load adapter 'x' from '/bad/x'"):
            await placement.ensure_loaded("x", "/bad/x")
        assert not placement.is_loaded("x")
        # a second attempt calls the engine again instead of replaying a cached failure
        with pytest.raises(AdapterLoadError):
            await placement.ensure_loaded("x", "/bad/x")

    asyncio.run(run())
    assert loads(engine) == ["x", "x"]


def test_concurrent_waiters_all_see_the_failure():
    engine = FakeEngine(delay_s=0.05)
    placement = AdapterPlacement(engine, capacity=2)

    async def run():
        return await asyncio.gather(
            *(placement.ensure_loaded("x", "/bad") for _ in range(5)), return_exceptions=True
        )

    results = asyncio.run(run())
    assert all(isinstance(r, AdapterLoadError) for r in results)
    assert loads(engine) == ["x"]


def test_engine_down_during_load_is_unavailable_not_load_error():
    engine = FakeEngine()
    engine.down = True
    placement = AdapterPlacement(engine, capacity=2)
    with pytest.raises(Unavailable) as info:
        asyncio.run(placement.ensure_loaded("a", "/a"))
    assert not isinstance(info.value, AdapterLoadError)


def test_cancelled_first_caller_does_not_cancel_the_shared_load():
    engine = FakeEngine(delay_s=0.05)
    placement = AdapterPlacement(engine, capacity=2)

    async def run():
        first = asyncio.create_task(placement.ensure_loaded("a", "/a"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(placement.ensure_loaded("a", "/a"))
        first.cancel()
        await second
        return placement.loaded

    assert asyncio.run(run()) == ["a"]
    assert loads(engine) == ["a"]


def test_drain_and_unload_waits_for_in_flight_requests():
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=4)
    order: list[str] = []

    async def request():
        async with placement.use("old", "/old"):
            await asyncio.sleep(0.1)
            order.append("request done")

    async def run():
        task = asyncio.create_task(request())
        await asyncio.sleep(0.03)
        assert await placement.drain_and_unload("old", timeout_s=5)
        order.append("unloaded")
        await task

    asyncio.run(run())
    assert order == ["request done", "unloaded"]
    assert engine.loaded == set()


def test_reload_all_loads_everything_again_and_gates_requests():
    engine = FakeEngine(delay_s=0.05)
    placement = AdapterPlacement(engine, capacity=4)

    async def run():
        await placement.ensure_loaded("a", "/a")
        await placement.ensure_loaded("b", "/b")
        engine.loaded.clear()  # the engine restarted and forgot them
        reload = asyncio.create_task(placement.reload_all())
        await asyncio.sleep(0)
        # a request arriving during the reload waits for it instead of loading twice
        assert await placement.ensure_loaded("a", "/a") is False
        await reload

    asyncio.run(run())
    assert engine.loaded == {"a", "b"}
    assert loads(engine) == ["a", "b", "a", "b"]


def test_pool_prefers_engine_with_adapter_then_least_busy():
    e0, e1 = FakeEngine(), FakeEngine()
    s0 = EngineSlot("e0", client=None, placement=AdapterPlacement(e0, 4))  # type: ignore[arg-type]
    s1 = EngineSlot("e1", client=None, placement=AdapterPlacement(e1, 4))  # type: ignore[arg-type]
    pool = EnginePool([s0, s1])

    async def run():
        await s1.placement.ensure_loaded("a", "/a")
        assert pool.pick("a") is s1
        # base requests: least busy wins (both idle: the first, then the other)
        async with pool.lease(None), pool.lease(None) as second:
            assert second is s1
        async with s1.placement.use("a"):
            assert pool.pick("b") is s0  # s1 is busy
        await pool.prepare_everywhere("v2", "/v2", probe=lambda client: asyncio.sleep(0))
        assert s0.placement.is_loaded("v2") and s1.placement.is_loaded("v2")
        assert await pool.drain_and_unload_everywhere("v2")
        assert not s0.placement.is_loaded("v2")

    asyncio.run(run())


def test_pool_skips_engines_that_are_not_ready():
    ready = {"e0": False}
    s0 = EngineSlot("e0", None, AdapterPlacement(FakeEngine(), 4), lambda: ready["e0"])  # type: ignore[arg-type]
    pool = EnginePool([s0])
    with pytest.raises(Unavailable):
        pool.pick(None)
    ready["e0"] = True
    assert pool.pick(None) is s0


def test_pool_call_reloads_once_when_the_engine_forgot_the_adapter():
    engine = FakeEngine()
    slot = EngineSlot("e0", client="client", placement=AdapterPlacement(engine, 4))  # type: ignore[arg-type]
    pool = EnginePool([slot])
    attempts = []

    async def request(client):
        attempts.append(client)
        if len(attempts) == 1:
            raise EngineAdapterMissing("The model `a` does not exist.")
        return "ok"

    assert asyncio.run(pool.call("a", "/a", request)) == "ok"
    assert loads(engine) == ["a", "a"]


def test_retired_version_stays_loaded_and_is_evicted_first():
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=3)

    async def run():
        for name in ("other", "v1", "v2"):
            await placement.ensure_loaded(name, f"/{name}")
        placement.retire("v1")  # v2 replaced v1 as champion: v1 is the rollback target
        assert placement.is_loaded("v1")
        await placement.ensure_loaded("new", "/new")  # room is needed: v1 goes, not "other"

    asyncio.run(run())
    assert placement.loaded == ["other", "v2", "new"]
    assert [n for kind, n in engine.calls if kind == "unload"] == ["v1"]


class ProbeRecorder:
    """A probe that records which engine it ran on and how many ran at once."""

    def __init__(self, fail: bool = False, delay_s: float = 0.05) -> None:
        self.fail = fail
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.running = 0
        self.max_running = 0

    async def __call__(self, client: str) -> None:
        self.calls.append(client)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail:
                raise Unavailable("probe failed")
        finally:
            self.running -= 1


def two_engine_pool(delay_s: float = 0.05):
    engines = [FakeEngine(delay_s), FakeEngine(delay_s)]
    slots = [EngineSlot(f"e{i}", client=f"c{i}", placement=AdapterPlacement(e, 4))  # type: ignore[arg-type]
             for i, e in enumerate(engines)]
    return engines, EnginePool(slots)


def test_prepare_loads_and_probes_every_engine_at_once_then_skips_what_is_verified():
    engines, pool = two_engine_pool()
    probe = ProbeRecorder()

    async def run():
        await pool.prepare_everywhere("v2", "/v2", probe)
        assert probe.max_running == 2  # both engines probed concurrently
        await pool.prepare_everywhere("v2", "/v2", probe)  # promoted back: nothing to do

    asyncio.run(run())
    assert sorted(probe.calls) == ["c0", "c1"]
    assert [loads(e) for e in engines] == [["v2"], ["v2"]]
    assert all(s.placement.refs("v2") == 0 for s in pool.slots)


def test_failed_probe_is_not_remembered_and_a_reload_needs_a_new_probe():
    engines, pool = two_engine_pool()
    failing = ProbeRecorder(fail=True)
    probe = ProbeRecorder()

    async def run():
        with pytest.raises(Unavailable, match="probe failed"):
            await pool.prepare_everywhere("v2", "/v2", failing)
        assert not pool.slots[0].placement.is_verified("v2")
        await pool.prepare_everywhere("v2", "/v2", probe)  # loaded already: probed again only
        engines[0].loaded.clear()  # engine e0 restarted
        await pool.slots[0].placement.reload_all()
        await pool.prepare_everywhere("v2", "/v2", probe)

    asyncio.run(run())
    assert [loads(e) for e in engines] == [["v2", "v2"], ["v2"]]
    assert probe.calls.count("c0") == 2 and probe.calls.count("c1") == 1


def test_pool_loads_a_cold_adapter_on_one_engine_and_spreads_a_hot_one():
    e0, e1 = FakeEngine(delay_s=0.05), FakeEngine(delay_s=0.05)
    s0 = EngineSlot("e0", client=None, placement=AdapterPlacement(e0, 4))  # type: ignore[arg-type]
    s1 = EngineSlot("e1", client=None, placement=AdapterPlacement(e1, 4))  # type: ignore[arg-type]
    pool = EnginePool([s0, s1], spill_after=3)
    release = asyncio.Event()

    async def request() -> str:
        async with pool.lease("a", "/a") as slot:
            await release.wait()
            return slot.name

    async def run():
        first = [asyncio.create_task(request()) for _ in range(3)]
        await asyncio.sleep(0.2)
        # Three concurrent first requests: one engine loads "a", the others wait for that load.
        assert (s0.placement.holds("a"), s1.placement.holds("a")) == (True, False)
        more = [asyncio.create_task(request()) for _ in range(3)]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*first), await asyncio.gather(*more)

    first, more = asyncio.run(run())
    assert set(first) == {"e0"}
    assert "e1" in more  # e0 was 3 requests busier than e1: the hot adapter spilled over
    assert loads(e0) == ["a"] and loads(e1) == ["a"]


def test_prepare_everywhere_skips_an_engine_that_stopped_answering():
    class Client:
        reachable = True

    up, down = FakeEngine(), FakeEngine()
    down.down = True
    gone = Client()
    s0 = EngineSlot("up", client=Client(), placement=AdapterPlacement(up, 4))  # type: ignore[arg-type]
    s1 = EngineSlot("down", client=gone, placement=AdapterPlacement(down, 4))  # type: ignore[arg-type]
    pool = EnginePool([s0, s1])

    async def probe(client):  # noqa: ANN001, ANN202
        return None

    async def run():
        gone.reachable = False  # its last request got no answer (transport failure)
        await pool.prepare_everywhere("v2", "/v2", probe)
        assert s0.placement.is_verified("v2") and not s1.placement.is_loaded("v2")
        gone.reachable = True  # a reachable engine that fails is an error, not skipped
        with pytest.raises(Unavailable):
            await pool.prepare_everywhere("v3", "/v3", probe)
        up.down = True
        gone.reachable = False
        s0.client.reachable = False
        with pytest.raises(Unavailable):  # none prepared: the promotion fails
            await pool.prepare_everywhere("v4", "/v4", probe)

    asyncio.run(run())


def test_a_name_that_now_means_other_content_is_loaded_again():
    """An adapter deleted and registered again under its old name has the same engine-side
    names with other weights (another artifact key): the engine must not keep the old ones."""
    engine = FakeEngine()
    placement = AdapterPlacement(engine, capacity=4)

    async def run():
        await placement.ensure_loaded("acme.bot.v1", "artifact:old")
        assert not await placement.ensure_loaded("acme.bot.v1", "artifact:old")
        assert await placement.ensure_loaded("acme.bot.v1", "artifact:new")

    asyncio.run(run())
    assert engine.calls == [("load", "acme.bot.v1"), ("unload", "acme.bot.v1"),
                            ("load", "acme.bot.v1")]


def test_purge_unloads_a_deleted_version_on_every_engine_also_where_another_gateway_loaded_it():
    e0, e1 = FakeEngine(), FakeEngine()
    slots = [EngineSlot("e0", client=e0, placement=AdapterPlacement(e0, 4)),  # type: ignore[arg-type]
             EngineSlot("e1", client=e1, placement=AdapterPlacement(e1, 4))]  # type: ignore[arg-type]
    pool = EnginePool(slots)

    async def run():
        await slots[0].placement.ensure_loaded("acme.bot.v1", "/v1")
        e1.loaded.add("acme.bot.v1")  # loaded on e1 by another gateway: this pool does not know
        await pool.purge_everywhere("acme.bot.v1")

    asyncio.run(run())
    assert not e0.loaded and not e1.loaded
    assert not slots[0].placement.is_loaded("acme.bot.v1")
    assert ("unload", "acme.bot.v1") in e1.calls
