"""An in-memory stand-in for the engine's LoRA load/unload calls (no vLLM)."""

from __future__ import annotations

import asyncio

from services.errors import Unavailable
from serving.engine_client import EngineAdapterMissing


class FakeEngine:
    """Records load/unload calls; a path containing "bad" fails like vLLM's 404."""

    def __init__(self, delay_s: float = 0.01):
        self.delay_s = delay_s
        self.loaded: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.down = False

    async def load_lora_adapter(self, name: str, path: str) -> None:
        self.calls.append(("load", name))
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise Unavailable("engine down")
        if "bad" in path:
            raise EngineAdapterMissing(f"Loading lora {name} failed: No adapter found for {path}")
        self.loaded.add(name)

    async def unload_lora_adapter(self, name: str) -> None:
        self.calls.append(("unload", name))
        await asyncio.sleep(self.delay_s)
        self.loaded.discard(name)
