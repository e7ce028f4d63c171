"""Bodies are bounded before they are read and uploads are authenticated first
(tuneloop/api/body_limits.py), proven on a real server over a raw socket."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from serving.engine_process import free_port
from tests.support.api import ADMIN_HEADERS, tenant_key
from tuneloop.app import create_app


@pytest.fixture
def server(make_settings) -> Iterator[tuple[int, TestClient]]:
    settings = make_settings(max_request_bytes=4096, max_upload_bytes=8192)
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                        log_level="error", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    # A second app on the same store, in-process, for setting up tenants.
    with TestClient(create_app(settings)) as client:
        yield port, client
    srv.should_exit = True
    thread.join(10)


def raw_request(port: int, head: str, body: bytes = b"", timeout_s: float = 5.0) -> tuple[str, float]:
    """Send ``head`` (+ ``body``) and return the status line and how long the answer took."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b"\r\n\r\n" + body)
        data = sock.recv(65536)
        return data.split(b"\r\n", 1)[0].decode(), time.monotonic() - started


def test_a_declared_10_gib_body_is_refused_at_once_without_being_read(server):
    port, client = server
    auth = tenant_key(client, "acme")
    for path in ("/v1/feedback", "/v1/files", "/admin/tenants"):
        status, seconds = raw_request(port, (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n{next(iter(auth))}: {auth['Authorization']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10737418240"))
        assert status == "HTTP/1.1 413 Request Entity Too Large", (path, status)
        assert seconds < 1.0


def test_an_unauthenticated_upload_is_refused_before_its_body(server):
    port, _ = server
    # Only the headers are sent: a server that read the body first would wait for it.
    status, seconds = raw_request(port, (
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        "Content-Length: 8000"))
    assert status == "HTTP/1.1 401 Unauthorized" and seconds < 1.0
    status, _ = raw_request(port, (
        "POST /admin/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
        "Content-Type: application/json\r\nContent-Length: 100"))
    assert status == "HTTP/1.1 401 Unauthorized"


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    _, client = server
    auth = tenant_key(client, "acme")

    def chunks() -> Iterator[bytes]:
        yield b'{"data": ['
        for _ in range(100):
            yield b'{"response_id": "x", "rating": 1},' * 10

    r = client.post("/v1/feedback", content=chunks(), headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 413 and "TUNELOOP_MAX_REQUEST_BYTES" in r.json()["error"]["message"]


def test_bodies_within_the_limits_still_work(server):
    _, client = server
    r = client.post("/admin/tenants", json={"name": "small"}, headers=ADMIN_HEADERS)
    assert r.status_code == 201
    auth = tenant_key(client, "acme")
    r = client.post("/v1/files", headers=auth, data={"purpose": "fine-tune"},
                    files={"file": ("t.jsonl", b'{"messages": []}\n', "application/jsonl")})
    assert r.status_code != 413, r.text
