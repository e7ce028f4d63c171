"""Relaying an engine's SSE stream to the client, with cleanup that cannot be skipped.

A streaming request holds a tenant slot and an engine lease from before the first byte until
the stream ends. :class:`RelayResponse` runs its ``on_close`` however the response ends:
finished, failed, or the client gone - also before the first byte, when the body iterator may
never start (an ASGI 2.4 server raises OSError from ``send``) and when the request is being
cancelled (the cleanup is shielded). Closing the engine stream aborts the generation in vLLM.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from services.errors import TuneloopError


class RelayResponse(StreamingResponse):
    """A ``text/event-stream`` response that always awaits ``on_close`` once, shielded."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._on_close()


@dataclass
class StreamRecord:
    """What a relayed stream produced, for the request log and metrics."""

    pieces: list[str] = field(default_factory=list)
    usage: dict = field(default_factory=dict)
    first_event_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


async def rewrite_events(
    lines: AsyncIterable[str], response_id: str, public_model: str, record: StreamRecord,
    *, include_usage: bool, idle_timeout_s: float | None = None,
) -> AsyncGenerator[bytes, None]:
    """Engine SSE lines -> client SSE events with the gateway's ``id`` and ``model``.

    Content and usage are collected into ``record``; the usage-only chunk (``choices: []``) is
    passed on only with ``include_usage`` (the client's ``stream_options``). An engine failure
    mid-stream becomes a final OpenAI error event (the status line was sent long ago), and so
    does an engine that sends nothing for ``idle_timeout_s`` (code ``stream_idle_timeout``):
    the stream ends, so its closing gives back the slot and aborts the engine request.
    """
    iterator = aiter(lines)
    try:
        while True:
            with anyio.move_on_after(idle_timeout_s) as waited:
                try:
                    line = await anext(iterator)
                except StopAsyncIteration:
                    return
            if waited.cancelled_caught:
                yield _error_event(
                    f"the engine sent nothing for {idle_timeout_s:g} s, so the stream was "
                    "ended (TUNELOOP_STREAM_IDLE_TIMEOUT_S); retry the request",
                    "server_error", "stream_idle_timeout")
                return
            if not line.startswith("data: ") or line == "data: [DONE]":
                yield line.encode() + b"\n\n"
                continue
            try:
                event = json.loads(line[6:])
            except ValueError:
                yield line.encode() + b"\n\n"
                continue
            if record.first_event_at is None:
                record.first_event_at = time.perf_counter()
            if isinstance(event, dict):
                event["id"] = response_id
                event["model"] = public_model
                for choice in event.get("choices") or ():
                    delta = choice.get("delta") or {}
                    record.pieces.append(delta.get("content") or choice.get("text") or "")
                if event.get("usage"):
                    record.usage = event["usage"]
                if not include_usage and event.get("choices") == []:
                    continue
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
    except TuneloopError as exc:
        yield _error_event(exc.message, exc.type, exc.code)


def _error_event(message: str, type_: str, code: str) -> bytes:
    err = {"error": {"message": message, "type": type_, "code": code}}
    return b"data: " + json.dumps(err).encode() + b"\n\n"
