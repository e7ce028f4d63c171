"""The parity check's engine side (:class:`training.jobs.parity.ParityEngine`): a job thread
runs the check's requests on the gateway's engine pool, the same path serving uses (load the
adapter under its versioned engine name, then chat completions or first-token scoring)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from serving.classify import Classifier
from serving.engine_client import EngineClient
from serving.gateway.dispatch import Dispatcher
from serving.placement import EnginePool
from training.datasets import Message
from training.jobs.parity import EngineUnavailable


class GatewayEngine:
    """:class:`ParityEngine` over the gateway's engine pool, from a job thread.

    ``dispatcher`` is the gateway's dispatcher (None when this app serves nothing: every check
    is then skipped). Requests run on the app's event ``loop``; a pool with no ready engine is
    waited for up to ``wait_s``.
    """

    def __init__(self, dispatcher: Dispatcher | None, loop: asyncio.AbstractEventLoop, *,
                 wait_s: float = 180.0, timeout_s: float = 300.0) -> None:
        self._dispatcher = dispatcher
        self._loop = loop
        self.wait_s = wait_s
        self.timeout_s = timeout_s

    def _pool(self) -> EnginePool:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._loop.is_closed() or not self._loop.is_running():
                raise EngineUnavailable("the app is shutting down")
            dispatcher = self._dispatcher
            if dispatcher is None:
                raise EngineUnavailable("serving is not enabled in this process (no gateway)")
            pool = dispatcher.pool
            if pool is not None and any(slot.is_ready() for slot in pool.slots):
                return pool
            if time.monotonic() > deadline:
                raise EngineUnavailable(f"no engine was ready within {self.wait_s:.0f} s")
            time.sleep(1.0)

    def greedy_replies(self, engine_name: str, adapter_path: str,
                       conversations: list[list[Message]], max_tokens: int) -> list[str]:
        pool = self._pool()

        async def run() -> list[str]:
            replies = []
            for messages in conversations:
                body = {"model": engine_name, "messages": messages, "max_tokens": max_tokens,
                        "temperature": 0.0}

                async def chat(client: EngineClient, b: dict[str, Any] = body) -> Any:
                    return await client.chat_completions(b)

                response = await pool.call(engine_name, adapter_path, chat)
                replies.append(response["choices"][0]["message"].get("content") or "")
            return replies

        try:
            future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            raise EngineUnavailable(f"the app is shutting down ({exc})") from exc
        return future.result(self.timeout_s)

    def label_probabilities(self, engine_name: str, adapter_path: str, template: str,
                            texts: list[str], labels: list[str]) -> list[dict[str, float]]:
        pool = self._pool()

        async def run() -> list[dict[str, float]]:
            results = await pool.call(engine_name, adapter_path, lambda client: Classifier(
                client).classify_many(engine_name, template, texts, labels))
            return [dict(r.probabilities) for r in results]

        try:
            future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            raise EngineUnavailable(f"the app is shutting down ({exc})") from exc
        return future.result(self.timeout_s)

    def forget(self, engine_name: str) -> None:
        dispatcher = self._dispatcher
        if dispatcher is None or dispatcher.pool is None:
            return
        asyncio.run_coroutine_threadsafe(
            dispatcher.pool.drain_and_unload_everywhere(engine_name, timeout_s=30),
            self._loop).result(self.timeout_s)
