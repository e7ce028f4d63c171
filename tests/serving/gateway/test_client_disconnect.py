"""A client that hangs up early gives back its tenant slot and aborts its engine request.

Real HTTP on both sides (the gateway under uvicorn, raw sockets as the client) against a stand-in
engine that holds its answer back, so the client is gone before the gateway relays a byte.
The real-engine version of the abort check is in tests/serving/test_gateway.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest

from services.platform import Platform
from services.tenants import create_key, create_tenant
from serving.engine_process import free_port
from tuneloop.app import create_app
from tuneloop.state import ServeOptions


class SlowStreamEngine:
    """ASGI stand-in for vLLM: ``/health``; streaming chat that answers its headers after
    ``headers_after_s`` and its first chunk ``first_chunk_after_s`` later; records every stream
    that ended because the gateway hung up."""

    def __init__(self, headers_after_s: float = 0.0, first_chunk_after_s: float = 1.0) -> None:
        self.headers_after_s = headers_after_s
        self.first_chunk_after_s = first_chunk_after_s
        self.opened = 0
        self.aborted = 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.opened += 1
        if not json.loads(raw).get("stream"):
            return await self._reply_later(receive, send)
        await asyncio.sleep(self.headers_after_s)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        disconnected = asyncio.ensure_future(receive())  # next message: http.disconnect
        done, _ = await asyncio.wait({disconnected}, timeout=self.first_chunk_after_s)
        if done:
            self.aborted += 1
            return
        chunk = {"id": "x", "object": "chat.completion.chunk", "model": "base",
                 "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}
        await send({"type": "http.response.body", "more_body": True,
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"})
        await send({"type": "http.response.body", "body": b""})
        disconnected.cancel()


    async def _reply_later(self, receive, send) -> None:
        disconnected = asyncio.ensure_future(receive())
        done, _ = await asyncio.wait({disconnected}, timeout=self.first_chunk_after_s)
        if done:
            self.aborted += 1
            return
        disconnected.cancel()
        reply = {"id": "x", "object": "chat.completion", "model": "base", "usage": {},
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(reply).encode()})


class Asgi24:
    """Wraps an app as an ASGI 2.4 server would run it: after the client hung up (``gone``),
    ``send`` raises OSError instead of dropping the message (uvicorn 0.x speaks 2.3)."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app
        self.enabled = False
        self.gone = False

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if not self.enabled or scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": "2.4"}}

        async def send_24(message) -> None:  # noqa: ANN001
            if self.gone:
                raise OSError("client disconnected")
            await send(message)

        await self.app(scope, receive, send_24)


class Server:
    def __init__(self, app, port: int) -> None:  # noqa: ANN001
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = port

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _request(port: int, key: str, body: dict) -> socket.socket:
    raw = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        + f"authorization: Bearer {key}\r\ncontent-length: {len(raw)}\r\n\r\n".encode() + raw
    )
    return sock


def _status(sock: socket.socket) -> int:
    sock.settimeout(10)
    head = sock.recv(65536)
    return int(head.split(b" ", 2)[1])


def _wait_for(condition, timeout_s: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def servers(make_settings):
    engine = SlowStreamEngine()
    with Server(engine, free_port()) as engine_server:
        settings = make_settings(engine_urls=[f"http://127.0.0.1:{engine_server.port}"],
                                 tenant_max_concurrency=1, tenant_rate_per_s=1000, port=free_port())
        platform = Platform.open(settings)
        with platform.store.write() as s:
            create_tenant(s, "acme")
            key = create_key(s, "acme").key
        app = create_app(platform=platform, serve=ServeOptions())
        wrapper = Asgi24(app)
        with Server(wrapper, settings.port) as gateway:
            gateway.wrapper = wrapper
            yield engine, gateway, key, app
        platform.close()


STREAM = {"model": "base", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {**STREAM, "stream": False}


@pytest.mark.parametrize(("engine_headers_after_s", "asgi_24"), [(0.5, False), (0.0, False), (0.5, True)],
                         ids=["before-headers", "before-first-token", "asgi-2.4-before-headers"])
def test_early_disconnect_releases_the_slot_and_aborts_the_engine_request(
    servers, engine_headers_after_s, asgi_24
):
    engine, gateway, key, app = servers
    engine.headers_after_s = engine_headers_after_s
    gateway.wrapper.enabled = asgi_24
    sock = _request(gateway.port, key, STREAM)
    assert _wait_for(lambda: engine.opened == 1), "the gateway never opened the engine stream"
    time.sleep(0.1)  # the client hangs up while the gateway waits for the engine's headers or token
    sock.close()
    gateway.wrapper.gone = True
    engine.headers_after_s = 0.0
    assert _wait_for(lambda: engine.aborted == 1), "the engine request was not aborted"
    gw = app.state.tuneloop.gateway
    assert _wait_for(lambda: gw.limiter.in_flight("acme") == 0), "the tenant's slot was never released"
    assert _wait_for(lambda: gw.dispatch.pool.slots[0].placement.in_flight == 0), "the engine lease leaked"
    # The tenant's only slot is free again: the next requests are served, not refused with 429.
    gateway.wrapper.gone = False
    for _ in range(2):
        with _request(gateway.port, key, STREAM) as sock:
            assert _status(sock) == 200
            sock.settimeout(10)
            received = b""
            while b"[DONE]" not in received:
                chunk = sock.recv(65536)
                assert chunk, "stream closed before [DONE]"
                received += chunk
        assert _wait_for(lambda: gw.limiter.in_flight("acme") == 0)


def test_disconnect_during_a_non_streaming_request_aborts_it_and_frees_the_slot(servers):
    engine, gateway, key, app = servers
    sock = _request(gateway.port, key, CHAT)
    assert _wait_for(lambda: engine.opened == 1)
    time.sleep(0.1)
    sock.close()
    assert _wait_for(lambda: engine.aborted == 1), "the engine request was not aborted"
    gw = app.state.tuneloop.gateway
    assert _wait_for(lambda: gw.limiter.in_flight("acme") == 0), "the tenant's slot was never released"
    with _request(gateway.port, key, CHAT) as sock:
        assert _status(sock) == 200
    assert 'status="499"' in gw.metrics.exposition().decode()  # counted as "client closed"


@pytest.fixture
def idle_servers(make_settings):
    """The stand-in engine holding its first chunk back for 30 s, behind a gateway whose tenant
    has 4 slots and whose streams end after 1 s without engine output."""
    engine = SlowStreamEngine(first_chunk_after_s=30.0)
    with Server(engine, free_port()) as engine_server:
        settings = make_settings(engine_urls=[f"http://127.0.0.1:{engine_server.port}"],
                                 tenant_max_concurrency=4, tenant_rate_per_s=1000,
                                 stream_idle_timeout_s=1.0, port=free_port())
        platform = Platform.open(settings)
        with platform.store.write() as s:
            create_tenant(s, "acme")
            key = create_key(s, "acme").key
        app = create_app(platform=platform, serve=ServeOptions())
        with Server(app, settings.port) as gateway:
            yield engine, gateway, {"Authorization": f"Bearer {key}"}, app
        platform.close()


def test_a_request_counts_its_sequences_and_a_silent_stream_ends_and_frees_them(idle_servers):
    import httpx

    engine, gateway, headers, app = idle_servers
    gw = app.state.tuneloop.gateway
    with httpx.Client(base_url=f"http://127.0.0.1:{gateway.port}", timeout=10) as client:
        started = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", headers=headers,
                           json={**STREAM, "n": 4}) as stream:
            assert stream.status_code == 200
            assert gw.limiter.in_flight("acme") == 4, "n=4 holds 4 of the tenant's slots"
            r = client.post("/v1/chat/completions", headers=headers, json=CHAT)
            assert r.status_code == 429, r.text
            assert "TUNELOOP_TENANT_MAX_CONCURRENCY" in r.json()["error"]["message"]
            body = b"".join(stream.iter_bytes())
        assert 0.9 < time.monotonic() - started < 10
        events = [json.loads(e[6:]) for e in body.decode().split("\n\n") if e.startswith("data: {")]
        assert events[-1]["error"]["code"] == "stream_idle_timeout", body
        assert "TUNELOOP_STREAM_IDLE_TIMEOUT_S" in events[-1]["error"]["message"]
        assert _wait_for(lambda: engine.aborted == 1), "the engine request was not aborted"
        assert _wait_for(lambda: gw.limiter.in_flight("acme") == 0), "the slots were kept"
        engine.first_chunk_after_s = 0.0
        r = client.post("/v1/chat/completions", headers=headers, json={**CHAT, "n": 16})
        assert r.status_code == 200, "a request heavier than the cap runs alone, taking all 4"
        r = client.post("/v1/completions", headers=headers,
                        json={"model": "base", "prompt": ["a"] * 17, "n": 16})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "too_many_sequences"
        assert "272 sequences (17 prompts x n=16)" in error["message"]
        assert "TUNELOOP_MAX_REQUEST_SEQUENCES" in error["message"]
