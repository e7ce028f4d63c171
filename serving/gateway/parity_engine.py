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
    waited for up to ``wait_s``. ``base_model_name``: the engine's name of the base model (a
    job's evaluation scores the base too).
    """

    def __init__(self, dispatcher: Dispatcher | None, loop: asyncio.AbstractEventLoop, *,
                 base_model_name: str = "", wait_s: float = 180.0, timeout_s: float = 300.0
                 ) -> None:
        self.access = PoolAccess(dispatcher, loop, wait_s=wait_s, timeout_s=timeout_s)
        self.base_model_name = base_model_name

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

    @property
    def configured(self) -> bool:
        """Whether this process reaches an engine (a job's evaluation then runs there)."""
        return self.access.configured

    def label_probabilities(self, engine_name: str | None, adapter_path: str | None,
                            template: str, texts: list[str], labels: list[str]
                            ) -> list[dict[str, float]]:
        """Per-label probabilities as ``/v1/classify`` computes them; ``engine_name`` None:
        the base model. All texts are in flight at once (``Classifier.classify_many``)."""
        model = engine_name if engine_name is not None else self.base_model_name
        if not model:
            raise ValueError("scoring the base model needs the engine's base_model_name")

        async def run(pool: EnginePool) -> list[dict[str, float]]:
            results = await pool.call(engine_name, adapter_path, lambda client: Classifier(
                client).classify_many(model, template, texts, labels))
            return [dict(r.probabilities) for r in results]

        return self.access.run(run)

    def forget(self, engine_name: str) -> None:
        self.access.unload(engine_name)
