"""Fixtures of the serving tests: an engine of its own for a test that kills it, a counting
client of the session engine, and PEFT's reference replies.

The session's one engine, its loop thread and the trained LoRA (``loop_thread``,
``engine_settings``, ``engine``, ``trained_adapter``) live in ``tests/support/engine.py``: the
console's tests share them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from services.settings import Settings
from serving.engine_client import EngineClient
from serving.engine_process import EngineProcess, free_port
from tests.support import lora_training
from tests.support.engine import LoopThread, start_engine
from tests.support.engine_key import ENGINE_KEY


@pytest.fixture
def doomed_engine(loop_thread: LoopThread, engine_settings: Settings, tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine of its own for a test that kills it: killing the session engine would make
    every later test that shares it depend on that test's restart."""
    settings = engine_settings.model_copy(update={"data_dir": tmp_path, "engine_port": free_port()})
    process = start_engine(loop_thread, settings)
    yield process
    loop_thread.run(process.stop(), timeout_s=60)


class CountingClient:
    """An :class:`EngineClient` plus a count of requests per (method, path)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()

        async def record(session, context, params) -> None:  # noqa: ANN001
            self.calls[(params.method, params.url.path)] += 1

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(record)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=timeout_s),
            trace_configs=[trace])
        self.client = EngineClient(url, session=session, retry_after_s=2.0, api_key=ENGINE_KEY)


@pytest.fixture
def counting(loop_thread: LoopThread, engine: EngineProcess, engine_settings: Settings) -> Iterator[CountingClient]:
    """A fresh counting client of the session engine (created on the engine's loop)."""

    async def make() -> CountingClient:
        return CountingClient(engine.url, engine_settings.request_timeout_s)

    counting = loop_thread.run(make())
    yield counting
    loop_thread.run(counting.client.aclose())


@pytest.fixture(scope="session")
def peft_reference(base_model_dir: Path, trained_adapter: Path) -> dict[str, str]:
    """PEFT's greedy replies of the trained adapter, prompt -> text (the parity reference)."""
    return {
        prompt: lora_training.peft_greedy(
            base_model_dir, trained_adapter, [{"role": "user", "content": prompt}],
            lora_training.PARITY_MAX_TOKENS,
        )
        for prompt in lora_training.PARITY_PROMPTS
    }
