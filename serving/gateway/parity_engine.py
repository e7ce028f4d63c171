"""The parity check's engine side (:class:`training.jobs.parity.ParityEngine`): a job thread
runs the check's requests on the gateway's engine pool, the same path serving uses (load the
adapter under its versioned engine name, then chat completions or first-token scoring)."""

from __future__ import annotations

import asyncio
from typing import Any

from serving.classify import Classifier
from serving.engine_client import EngineClient
from serving.gateway.dispatch import Dispatcher
from serving.gateway.pool_access import PoolAccess
from serving.placement import EnginePool
from training.datasets import Message


class GatewayEngine:
    """:class:`ParityEngine` over the gateway's engine pool, from a job thread.

    ``dispatcher`` is the gateway's dispatcher (None when this app serves nothing: every check
    is then skipped). Requests run on the app's event ``loop``; a pool with no ready engine is
    waited for up to ``wait_s``.
    """

    def __init__(self, dispatcher: Dispatcher | None, loop: asyncio.AbstractEventLoop, *,
                 wait_s: float = 180.0, timeout_s: float = 300.0) -> None:
        self.access = PoolAccess(dispatcher, loop, wait_s=wait_s, timeout_s=timeout_s)

    def ready(self) -> None:
        self.access.pool()

    def greedy_replies(self, engine_name: str, adapter_path: str,
                       conversations: list[list[Message]], max_tokens: int) -> list[str]:
        async def run(pool: EnginePool) -> list[str]:
            replies = []
            for messages in conversations:
                body = {"model": engine_name, "messages": messages, "max_tokens": max_tokens,
                        "temperature": 0.0}

                async def chat(client: EngineClient, b: dict[str, Any] = body) -> Any:
                    return await client.chat_completions(b)

                response = await pool.call(engine_name, adapter_path, chat)
                replies.append(response["choices"][0]["message"].get("content") or "")
            return replies

        return self.access.run(run)

    def label_probabilities(self, engine_name: str, adapter_path: str, template: str,
                            texts: list[str], labels: list[str]) -> list[dict[str, float]]:
        async def run(pool: EnginePool) -> list[dict[str, float]]:
            results = await pool.call(engine_name, adapter_path, lambda client: Classifier(
                client).classify_many(engine_name, template, texts, labels))
            return [dict(r.probabilities) for r in results]

        return self.access.run(run)

    def forget(self, engine_name: str) -> None:
        self.access.unload(engine_name)
