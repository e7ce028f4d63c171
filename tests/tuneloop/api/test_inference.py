"""Gateway behaviour that needs no engine: 503 with Retry-After when engines are down, 429 over
the tenant's rate, request validation before any engine call."""

from __future__ import annotations

import logging
import time

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


def test_every_message_field_counts_towards_the_prompt_size(client):
    # 1024 tokens (the default context) * 16 characters is the refusal point; ``name`` counts too.
    body = {"model": "base", "messages": [{"role": "user", "content": "hi", "name": "n" * 20_000}]}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_stream_options_must_be_an_object(client):
    for path, body in [("/v1/chat/completions", CHAT), ("/v1/completions", {"model": "base", "prompt": "x"})]:
        r = client.post(path, json={**body, "stream": True, "stream_options": "usage"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "stream_options"


def test_an_engine_that_cannot_start_is_logged_and_answers_503_with_the_reason(
        make_settings, tmp_path, caplog):
    platform = Platform.open(make_settings(base_model=str(tmp_path / "no-model-here")))
    with platform.store.write() as s:
        create_tenant(s, "acme")
        key = create_key(s, "acme").key
    app = create_app(platform=platform, serve=ServeOptions(spawn_engine=True))
    with caplog.at_level(logging.ERROR, logger="tuneloop"), TestClient(app) as c:
        deadline = time.monotonic() + 10
        while "does not exist" not in (r := c.get("/readyz")).text:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.status_code == 503
        assert "the local engine failed" in r.json()["error"]["message"]
        assert "tuneloop models import-default" in r.json()["error"]["message"]
        chat = c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
        assert chat.status_code == 503 and "does not exist" in chat.json()["error"]["message"]
    platform.close()
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("the local engine failed" in m and "import-default" in m for m in logged), logged


def test_a_version_beyond_the_store_integer_is_400_not_500(client):
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "bot@v" + "9" * 30})
    assert r.status_code == 400 and "beyond" in r.json()["error"]["message"]


@pytest.mark.parametrize("token_setting", ["engine_api_key", "metrics_token"])
def test_metrics_need_the_token_once_one_is_set_and_never_label_raw_models(make_settings,
                                                                          token_setting):
    settings = make_settings(engine_urls=["http://127.0.0.1:9"], **{token_setting: "scrape-me"})
    platform = Platform.open(settings)
    with platform.store.write() as s:
        create_tenant(s, "acme")
        key = create_key(s, "acme").key
    with TestClient(create_app(platform=platform, serve=ServeOptions())) as c:
        auth = {"Authorization": f"Bearer {key}"}
        for model in ("no-such-model", "x" * 60):  # refused (404) before any label is made
            c.post("/v1/chat/completions", headers=auth, json={**CHAT, "model": model})
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers=auth).status_code == 401  # a tenant key is not enough
        r = c.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and 'adapter="unresolved"' in r.text
        assert "no-such-model" not in r.text and "x" * 60 not in r.text
    platform.close()
