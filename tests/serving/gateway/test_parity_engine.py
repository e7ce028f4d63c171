"""The parity check's engine side over a fake engine pool: requests run on the pool from a job
thread; no serving, no ready engine or a stopped app skip the check (never fail it)."""

from __future__ import annotations

import asyncio

import pytest

from serving.gateway.parity_engine import GatewayEngine
from training.jobs.parity import EngineUnavailable


class FakeClient:
    def __init__(self):
        self.bodies = []

    async def chat_completions(self, body):
        self.bodies.append(body)
        return {"choices": [{"message": {"content": "reply to " + body["messages"][0]["content"]}}]}


class FakeSlot:
    def __init__(self, ready):
        self.ready = ready

    def is_ready(self):
        return self.ready


class FakePool:
    def __init__(self, ready=True):
        self.slots = [FakeSlot(ready)]
        self.client = FakeClient()
        self.loaded: list[tuple[str, str]] = []
        self.unloaded: list[str] = []

    async def call(self, adapter, path, request):
        self.loaded.append((adapter, path))
        return await request(self.client)

    async def drain_and_unload_everywhere(self, name, timeout_s=None):
        self.unloaded.append(name)
        return True


class FakeDispatcher:
    def __init__(self, pool):
        self.pool = pool


def test_gateway_engine_runs_greedy_requests_on_the_pool(loop):
    pool = FakePool()
    engine = GatewayEngine(FakeDispatcher(pool), loop, wait_s=0)
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    assert engine.greedy_replies("t.x.v1", "/p", prompts, 16) == ["reply to a", "reply to b"]
    assert pool.loaded == [("t.x.v1", "/p")] * 2
    assert all(b["temperature"] == 0.0 and b["max_tokens"] == 16 and b["model"] == "t.x.v1"
               for b in pool.client.bodies)
    engine.forget("t.x.v1")
    assert pool.unloaded == ["t.x.v1"]


def test_gateway_engine_is_unavailable_without_serving_or_a_ready_engine(loop):
    with pytest.raises(EngineUnavailable, match="serving is not enabled"):
        GatewayEngine(None, loop, wait_s=0).greedy_replies("n", "/p", [], 16)
    with pytest.raises(EngineUnavailable, match="no engine was ready within 0 s"):
        GatewayEngine(FakeDispatcher(FakePool(ready=False)), loop, wait_s=0
                      ).greedy_replies("n", "/p", [], 16)
    stopped = asyncio.new_event_loop()  # the app stopped: skip the check, never fail it
    try:
        with pytest.raises(EngineUnavailable, match="shutting down"):
            GatewayEngine(FakeDispatcher(FakePool()), stopped, wait_s=0
                          ).greedy_replies("n", "/p", [], 16)
    finally:
        stopped.close()
