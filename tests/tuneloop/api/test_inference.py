"""Gateway behaviour that needs no engine: 503 with Retry-After when engines are down, 429 over
the tenant's rate, request validation before any engine call."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.platform import Platform
from services.tenants import create_key, create_tenant
from tuneloop.app import create_app
from tuneloop.state import ServeOptions


@pytest.fixture
def client(make_settings):
    settings = make_settings(engine_urls=["http://127.0.0.1:9"], tenant_rate_per_s=1.0)
    platform = Platform.open(settings)
    with platform.store.write() as s:
        create_tenant(s, "acme")
        key = create_key(s, "acme").key
    app = create_app(platform=platform, serve=ServeOptions())
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {key}"
        yield c
    platform.close()


CHAT = {"model": "base", "messages": [{"role": "user", "content": "hi"}]}


def test_engine_down_is_503_with_retry_after_then_429_over_rate(client):
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["type"] == "server_error"
    r = client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "TUNELOOP_TENANT_RATE_PER_S" in r.json()["error"]["message"]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_bad_requests_fail_before_the_engine(client):
    assert client.post("/v1/chat/completions", json={"model": "base"}).status_code == 400
    assert client.post("/v1/completions", json={"model": "base", "prompt": "x", "n": 99}).status_code == 400
    r = client.post("/v1/classify", json={"model": "base", "input": []})
    assert r.status_code == 400 and "non-empty" in r.json()["error"]["message"]
    r = client.post("/v1/classify", json={"model": "base", "input": "x", "extra": 1})
    assert r.status_code == 400
    r = client.post("/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]


def test_metrics_exposition_is_prometheus_text(client):
    client.post("/v1/chat/completions", json=CHAT)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert "tuneloop_requests_total" in r.text and 'status="503"' in r.text
