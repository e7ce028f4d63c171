"""Session fixtures: one real vLLM engine and one tiny trained LoRA, shared by every test package
(the serving tests and the console's real-engine test): a second engine would cost minutes.

Registered as a plugin from ``tests/conftest.py``. The engine and its clients live on one event
loop running in a background thread for the whole session (the supervisor keeps watching between
tests); tests submit coroutines with ``run``. The adapter is trained with PEFT once and cached on
disk under ``.tuneloop/test-cache``, keyed by the training recipe and the base model fingerprint,
so repeated runs skip the training.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from services.settings import Settings
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
        engine_extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        # float32 on every machine (auto picks bfloat16 where the CPU computes it natively): the
        # tests compare the engine's numbers with float32 PEFT's, and a near-tie must not flip
        # with the CI machine's instruction set
        engine_dtype="float32",
    )


def start_engine(loop_thread: LoopThread, settings: Settings) -> EngineProcess:
    """A started vLLM engine for ``settings`` (supervised on ``loop_thread``'s loop)."""
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
    process = start_engine(loop_thread, engine_settings)
    yield process
    loop_thread.run(process.stop(), timeout_s=60)


def serving_on(engine: EngineProcess, engine_settings: Settings) -> dict[str, Any]:
    """Settings fields of an app that serves on the session ``engine``: its URL and key, the
    artifact store it fetches adapters from, the name it serves the base model by, its context
    length. The engine knows adapters by ``tenant.name.vN`` whatever the store: a test on it
    uses a tenant name no other test of the session uses."""
    return {"engine_urls": [engine.url], "engine_api_key": ENGINE_KEY,
            "artifacts_url": engine_settings.resolved_artifacts_url,
            "base_model_name": engine_settings.resolved_base_model_name,
            "max_model_len": engine_settings.max_model_len}


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
