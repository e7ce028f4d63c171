"""Parity check before a version is servable: greedy replies to a few held-out prompts through
the serving engine must equal PEFT's replies for the same adapter.

A mismatch means the engine does not run the adapter the way training did (an unsupported
module or rank, a different chat template, a conversion bug); such a version is marked FAILED
and never served. The engine side is a small :class:`ParityEngine` protocol; the real one,
:class:`GatewayEngine`, runs the requests on the gateway's engine pool (the same path serving
uses: load the adapter under its versioned engine name, then chat completions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from training.datasets import Message

PROMPTS = 3
MAX_NEW_TOKENS = 16


class EngineUnavailable(Exception):
    """No engine can run the check (no serving in this process, or none ready): skip it."""


class ParityEngine(Protocol):
    def greedy_replies(self, engine_name: str, adapter_path: str,
                       conversations: list[list[Message]], max_tokens: int) -> list[str]:
        """Greedy (temperature 0) chat replies with the adapter loaded under ``engine_name``.
        Raises EngineUnavailable when no engine can run them; other errors are real failures."""
        ...

    def forget(self, engine_name: str) -> None:
        """Unload ``engine_name`` (a version that failed the check is never served)."""
        ...


@dataclass(frozen=True)
class ParityResult:
    """The typed content of a ``parity_checked`` event."""

    passed: bool
    prompts: int
    max_new_tokens: int
    mismatch: dict[str, Any] | None  # index, prompt, engine, peft of the first differing reply
    reference: str = "training run"  # where PEFT's replies were computed ("job manager": here)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def message(self, ref: str) -> str:
        if self.passed:
            return (f"parity check passed: the engine's greedy replies to {self.prompts} held-out "
                    f"prompts equal PEFT's ({self.max_new_tokens} new tokens); {ref} is servable")
        m = self.mismatch or {}
        return (f"parity check failed for {ref}: held-out prompt {m.get('index')} "
                f"({_short(m.get('prompt'))}): the engine replied {m.get('engine')!r}, PEFT "
                f"replied {m.get('peft')!r}; the version is kept as failed and never served")


def _short(messages: Any, width: int = 80) -> str:
    text = " | ".join(str(m.get("content", "")) for m in messages or [])
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def compare_replies(conversations: list[list[Message]], engine: list[str], peft: list[str],
                    max_new_tokens: int = MAX_NEW_TOKENS) -> ParityResult:
    """Pure: the first prompt whose replies differ (surrounding whitespace aside), if any."""
    if len(engine) != len(peft) or len(peft) != len(conversations):
        raise ValueError(f"{len(conversations)} prompts, {len(engine)} engine replies, "
                         f"{len(peft)} PEFT replies")
    for i, (conversation, e, p) in enumerate(zip(conversations, engine, peft)):
        if e.strip() != p.strip():
            return ParityResult(False, len(peft), max_new_tokens, {
                "index": i, "prompt": conversation, "engine": e, "peft": p})
    return ParityResult(True, len(peft), max_new_tokens, None)


class GatewayEngine:
    """:class:`ParityEngine` over the gateway's engine pool, from a job thread.

    ``dispatcher`` returns the gateway's dispatcher (None when this app serves nothing); it is
    looked up at check time because the gateway starts after the job manager. Requests run on
    the app's event ``loop``; a pool with no ready engine is waited for up to ``wait_s``.
    """

    def __init__(self, dispatcher: Callable[[], Any], loop: asyncio.AbstractEventLoop, *,
                 wait_s: float = 180.0, timeout_s: float = 300.0):
        self._dispatcher = dispatcher
        self._loop = loop
        self.wait_s = wait_s
        self.timeout_s = timeout_s

    def _pool(self) -> Any:
        deadline = time.monotonic() + self.wait_s
        while True:
            if self._loop.is_closed() or not self._loop.is_running():
                raise EngineUnavailable("the app is shutting down")
            dispatcher = self._dispatcher()
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
                response = await pool.call(engine_name, adapter_path,
                                           lambda client, b=body: client.chat_completions(b))
                replies.append(response["choices"][0]["message"].get("content") or "")
            return replies

        try:
            future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            raise EngineUnavailable(f"the app is shutting down ({exc})") from exc
        return future.result(self.timeout_s)

    def forget(self, engine_name: str) -> None:
        dispatcher = self._dispatcher()
        if dispatcher is None or dispatcher.pool is None:
            return
        asyncio.run_coroutine_threadsafe(
            dispatcher.pool.drain_and_unload_everywhere(engine_name, timeout_s=30),
            self._loop).result(self.timeout_s)
