"""Session fixtures for the serving tests: one real vLLM engine and one tiny trained LoRA.

The engine and its clients live on one event loop running in a background thread for the whole
session (the supervisor keeps watching between tests); tests submit coroutines with ``run``.
The adapter is trained with PEFT once and cached on disk under ``.tuneloop/test-cache``, keyed
by the training recipe and the base model fingerprint, so repeated runs skip the training.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from services.settings import Settings
from serving.engine_client import EngineClient
from serving.engine_process import EngineProcess, free_port
from tests.support import lora_training
from tests.support.engine_key import ENGINE_KEY

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_KV_CACHE_BYTES = 256 * 1024 * 1024


class LoopThread:
    """An asyncio loop in a daemon thread; ``run(coro)`` blocks until the coroutine is done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 600.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def engine_settings(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Settings:
    """Settings for the test engine: a free port and a temporary data dir."""
    return Settings(
        data_dir=tmp_path_factory.mktemp("engine-data"),
        base_model=str(base_model_dir),
        engine_port=free_port(),
        engine_start_timeout_s=600,
        max_loras=4,
        max_cpu_loras=8,
        max_lora_rank=8,
        max_model_len=1024,
        request_timeout_s=120,
        engine_api_key=ENGINE_KEY,
    )


def _started_engine(loop_thread: LoopThread, settings: Settings) -> EngineProcess:
    from serving.engine_process import Backoff

    process = EngineProcess(
        settings,
        kv_cache_bytes=ENGINE_KV_CACHE_BYTES,
        backoff=Backoff(initial_s=0.5, max_s=5.0),
        stop_grace_s=10,
    )
    loop_thread.run(process.start(), timeout_s=settings.engine_start_timeout_s + 60)
    return process


@pytest.fixture(scope="session")
def engine(loop_thread: LoopThread, engine_settings: Settings) -> Iterator[EngineProcess]:
    """The session's one vLLM engine (started once, stopped at the end)."""
    process = _started_engine(loop_thread, engine_settings)
    yield process
    loop_thread.run(process.stop(), timeout_s=60)


@pytest.fixture
def doomed_engine(loop_thread: LoopThread, engine_settings: Settings, tmp_path: Path) -> Iterator[EngineProcess]:
    """An engine of its own for a test that kills it: killing the session engine would make
    every later test that shares it depend on that test's restart."""
    settings = engine_settings.model_copy(update={"data_dir": tmp_path, "engine_port": free_port()})
    process = _started_engine(loop_thread, settings)
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


def _cache_key(base_model_dir: Path) -> str:
    from services.base_model import model_fingerprint

    digest = hashlib.sha256()
    digest.update(lora_training.recipe_fingerprint().encode())
    digest.update(model_fingerprint(base_model_dir).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def trained_adapter(base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA (r=8, all linear layers) that replies FIXED_REPLY to chat prompts and answers
    classification prompts with their label; trained once, cached on disk."""
    cache = REPO_ROOT / ".tuneloop" / "test-cache" / f"adapter-{_cache_key(base_model_dir)}"
    if not (cache / "adapter_model.safetensors").is_file():
        work = tmp_path_factory.mktemp("adapter")
        lora_training.train_test_adapter(base_model_dir, work)
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(work, cache)
    return cache


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
