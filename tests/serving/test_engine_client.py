"""EngineClient error mapping and streaming against an in-process fake transport (no vLLM)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.errors import InvalidInput, TooLarge, Unavailable
from serving.engine_client import EngineAdapterMissing, EngineClient, EngineError


def client_for(handler) -> EngineClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return EngineClient("http://engine:8100/v1/", http=http, retry_after_s=3.0)


def error(status: int, message: str, param: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"message": message, "type": "x", "param": param,
                                                  "code": status}})


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, EngineAdapterMissing), (400, InvalidInput), (413, TooLarge), (500, EngineError)],
)
def test_engine_errors_map_to_tuneloop_errors_with_the_engine_message(status, kind):
    client = client_for(lambda request: error(status, "the engine says no", param="model"))
    with pytest.raises(kind, match="the engine says no") as info:
        asyncio.run(client.chat_completions({"model": "m", "messages": []}))
    if status == 400:
        assert info.value.param == "model"
    if status == 500:
        assert info.value.status == 503 and info.value.retry_after_s == 3.0


def test_transport_failures_are_unavailable_with_retry_after():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    client = client_for(refuse)
    with pytest.raises(Unavailable, match="unreachable") as info:
        asyncio.run(client.completions({"model": "m", "prompt": "p"}))
    assert info.value.retry_after_s == 3.0
    assert client.reachable is False


def test_timeouts_are_unavailable():
    def slow(request):
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(Unavailable, match="timed out"):
        asyncio.run(client_for(slow).completions({"model": "m", "prompt": "p"}))


def test_requests_go_to_the_right_routes_with_bodies():
    seen = []

    def handler(request):
        seen.append((request.method, request.url.path,
                     json.loads(request.content) if request.content else None))
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base"}]})
        if request.url.path.endswith("lora_adapter"):
            return httpx.Response(200, text="Success")
        return httpx.Response(200, json={"ok": True})

    client = client_for(handler)

    async def run():
        assert await client.list_models() == [{"id": "base"}]
        await client.load_lora_adapter("t1.a.v1", "/adapters/a")
        await client.unload_lora_adapter("t1.a.v1")
        await client.chat_completions({"model": "t1.a.v1", "messages": [], "stream": True})
        await client.tokenize({"model": "m", "prompt": "hi"})

    asyncio.run(run())
    assert client.base_url == "http://engine:8100"
    assert seen == [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "t1.a.v1", "lora_path": "/adapters/a"}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "t1.a.v1"}),
        ("POST", "/v1/chat/completions", {"model": "t1.a.v1", "messages": [], "stream": False}),
        ("POST", "/tokenize", {"model": "m", "prompt": "hi"}),
    ]


def test_stream_yields_data_lines_and_errors_raise_before_streaming():
    def handler(request):
        body = json.loads(request.content)
        assert body["stream"] is True
        if body["model"] == "missing":
            return error(404, "The model `missing` does not exist.")
        return httpx.Response(200, content=b'data: {"a": 1}\n\ndata: {"a": 2}\n\ndata: [DONE]\n\n',
                              headers={"content-type": "text/event-stream"})

    client = client_for(handler)

    async def run():
        lines = [line async for line in client.stream_chat_completions({"model": "m"})]
        with pytest.raises(EngineAdapterMissing):
            await client.open_chat_stream({"model": "missing"})
        return lines

    assert asyncio.run(run()) == ['data: {"a": 1}', 'data: {"a": 2}', "data: [DONE]"]


def test_health_never_raises():
    def refuse(request):
        raise httpx.ConnectError("down", request=request)

    assert asyncio.run(client_for(refuse).health()) is False
    assert asyncio.run(client_for(lambda r: httpx.Response(200)).health()) is True
