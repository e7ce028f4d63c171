"""EngineClient error mapping and streaming against an in-process stand-in server (no vLLM)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.errors import InvalidInput, TooLarge, Unavailable
from serving.engine_client import EngineAdapterMissing, EngineClient, EngineError


def run_against(handler, test, **client_options):  # noqa: ANN001, ANN201
    """Serve ``handler`` for every path on a local port; run ``test(client)`` against it."""

    async def main():  # noqa: ANN202
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app)
        await server.start_server()
        client = EngineClient(f"http://127.0.0.1:{server.port}/v1/", retry_after_s=3.0, **client_options)
        try:
            return await test(client)
        finally:
            await client.aclose()
            await server.close()

    return asyncio.run(main())


def error(status: int, message: str, param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "x", "param": param, "code": status}},
                             status=status)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, EngineAdapterMissing), (400, InvalidInput), (413, TooLarge), (500, EngineError)],
)
def test_engine_errors_map_to_tuneloop_errors_with_the_engine_message(status, kind):
    async def handler(request):
        return error(status, "the engine says no", param="model")

    async def test(client):
        with pytest.raises(kind, match="the engine says no") as info:
            await client.chat_completions({"model": "m", "messages": []})
        return info.value

    raised = run_against(handler, test)
    if status == 400:
        assert raised.param == "model"
    if status == 500:
        assert raised.status == 503 and raised.retry_after_s == 3.0


def test_transport_failures_are_unavailable_with_retry_after():
    async def run():
        client = EngineClient("http://127.0.0.1:9", retry_after_s=3.0)  # nothing listens on port 9
        try:
            with pytest.raises(Unavailable, match="unreachable") as info:
                await client.completions({"model": "m", "prompt": "p"})
        finally:
            await client.aclose()
        return client, info.value

    client, raised = asyncio.run(run())
    assert raised.retry_after_s == 3.0
    assert client.reachable is False


def test_errors_name_the_engine_by_its_label_never_its_address():
    """Error messages reach tenants: a labelled client (the gateway labels each engine with its
    slot name) never names the engine's internal address."""
    async def handler(request):
        return error(500, "boom")

    async def test(client):
        with pytest.raises(EngineError) as failed:
            await client.chat_completions({"model": "m", "messages": []})
        return client.base_url, str(failed.value)

    url, message = run_against(handler, test, label="engine-0")
    assert message == "engine engine-0 failed (500): boom"
    assert url.removeprefix("http://") not in message

    async def unreachable():
        client = EngineClient("http://127.0.0.1:9", label="engine-1")  # nothing listens
        try:
            with pytest.raises(Unavailable) as info:
                await client.completions({"model": "m", "prompt": "p"})
        finally:
            await client.aclose()
        return str(info.value)

    assert asyncio.run(unreachable()).startswith("engine engine-1 is unreachable: Client")


def test_timeouts_are_unavailable():
    async def slow(request):
        await asyncio.sleep(2)
        return web.json_response({})

    async def test(client):
        with pytest.raises(Unavailable, match="timed out"):
            await client.completions({"model": "m", "prompt": "p"})
        with pytest.raises(Unavailable, match="timed out"):  # a per-call limit (probes)
            await client.completions({"model": "m", "prompt": "p"}, timeout_s=0.1)

    run_against(slow, test, timeout_s=0.2)


def test_requests_go_to_the_right_routes_with_bodies():
    seen = []

    async def handler(request):
        raw = await request.read()
        seen.append((request.method, request.path, json.loads(raw) if raw else None))
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "base"}]})
        if request.path.endswith("lora_adapter"):
            return web.Response(text="Success")
        return web.json_response({"ok": True})

    async def test(client):
        assert await client.list_models() == [{"id": "base"}]
        await client.load_lora_adapter("t1.a.v1", "/adapters/a")
        await client.unload_lora_adapter("t1.a.v1")
        await client.chat_completions({"model": "t1.a.v1", "messages": [], "stream": True})
        await client.tokenize({"model": "m", "prompt": "hi"})
        return client.base_url

    base_url = run_against(handler, test)
    assert base_url.startswith("http://127.0.0.1:") and not base_url.endswith(("/", "/v1"))
    assert seen == [
        ("GET", "/v1/models", None),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "t1.a.v1", "lora_path": "/adapters/a"}),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "t1.a.v1"}),
        ("POST", "/v1/chat/completions", {"model": "t1.a.v1", "messages": [], "stream": False}),
        ("POST", "/tokenize", {"model": "m", "prompt": "hi"}),
    ]


def test_stream_yields_data_lines_and_errors_raise_before_streaming():
    long_event = "data: " + json.dumps({"text": "x" * 200_000})  # longer than a read buffer

    async def handler(request):
        body = await request.json()
        assert body["stream"] is True
        if body["model"] == "missing":
            return error(404, "The model `missing` does not exist.")
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in (b'data: {"a": 1}\n\ndata: {"a"', b': 2}\r\n\r\n', long_event.encode() + b"\n\n",
                      b"data: [DONE]\n\n"):
            await response.write(piece)
        return response

    async def test(client):
        lines = [line async for line in client.stream_chat_completions({"model": "m"})]
        with pytest.raises(EngineAdapterMissing):
            await client.open_chat_stream({"model": "missing"})
        return lines

    assert run_against(handler, test) == ['data: {"a": 1}', 'data: {"a": 2}', long_event, "data: [DONE]"]


def test_health_never_raises():
    async def down():
        client = EngineClient("http://127.0.0.1:9")
        try:
            return await client.health()
        finally:
            await client.aclose()

    async def ok(request):
        return web.Response()

    assert asyncio.run(down()) is False
    assert run_against(ok, lambda client: client.health()) is True
