"""Relaying an engine stream: the gateway's id and model on every event, the content and usage
collected for the request log, the usage-only chunk passed on only when the client asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from serving.gateway.streaming import StreamRecord, rewrite_events

USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
ENGINE_LINES = [
    'data: {"id": "engine-1", "model": "acme.bot.v1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}',
    'data: {"id": "engine-1", "model": "acme.bot.v1", "choices": [{"index": 0, "delta": {"content": "!"}}]}',
    f'data: {{"id": "engine-1", "model": "acme.bot.v1", "choices": [], "usage": {json.dumps(USAGE)}}}',
    "data: [DONE]",
]


async def _lines() -> AsyncIterator[str]:
    for line in ENGINE_LINES:
        yield line


def _relay(include_usage: bool) -> tuple[list[dict], StreamRecord, bytes]:
    record = StreamRecord()

    async def run() -> bytes:
        return b"".join([chunk async for chunk in rewrite_events(
            _lines(), "chatcmpl-1", "bot@v1", record, include_usage=include_usage)])

    raw = asyncio.run(run())
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n")
              if e.startswith("data: {")]
    return events, record, raw


@pytest.mark.parametrize("include_usage", [False, True], ids=["not-asked", "asked"])
def test_usage_is_collected_always_and_sent_only_when_asked(include_usage):
    events, record, raw = _relay(include_usage)
    assert record.usage == USAGE and record.text == "Hi!"
    assert raw.endswith(b"data: [DONE]\n\n")
    assert {(e["id"], e["model"]) for e in events} == {("chatcmpl-1", "bot@v1")}
    if include_usage:
        assert len(events) == 3 and events[-1]["choices"] == [] and events[-1]["usage"] == USAGE
    else:
        assert len(events) == 2 and all(e["choices"] for e in events)


def test_an_engine_that_goes_silent_ends_the_stream_with_an_error_event():
    closed = []

    async def stalls() -> AsyncIterator[str]:
        try:
            yield ENGINE_LINES[0]
            await asyncio.sleep(60)
            yield ENGINE_LINES[1]
        finally:
            closed.append(True)

    async def run() -> bytes:
        return b"".join([chunk async for chunk in rewrite_events(
            stalls(), "chatcmpl-1", "bot@v1", StreamRecord(), include_usage=False,
            idle_timeout_s=0.05)])

    raw = asyncio.run(asyncio.wait_for(run(), 5))
    events = [json.loads(e[6:]) for e in raw.decode().split("\n\n") if e.startswith("data: {")]
    assert events[0]["choices"][0]["delta"]["content"] == "Hi"
    assert events[-1]["error"]["code"] == "stream_idle_timeout"
    assert "0.05 s" in events[-1]["error"]["message"]
    assert closed == [True], "the engine stream was not closed"
