"""The operator's read-only views over HTTP: engines (with and without serving), the job queue
across tenants, and the monitor's events across tenants; all need the admin key."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from services.adapter_intake import register_adapter_dir
from services.platform import Platform
from tests.support.api import ADMIN_HEADERS, classification_lines, tenant_key, upload
from tests.support.fake_engine import Handler
from tuneloop.app import create_app
from tuneloop.state import ServeOptions

ROUTES = ("/admin/engines", "/admin/jobs", "/admin/monitor/events")


@pytest.fixture
def client(platform):
    with TestClient(create_app(platform=platform, jobs={"concurrency": 0})) as c:
        yield c


@pytest.fixture
def fake_engine_url():
    """The supervisor tests' stand-in engine (answers /health and every POST) on a thread."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_views_need_the_admin_key(client):
    acme = tenant_key(client, "acme")
    for path in ROUTES:
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=acme).status_code == 403, path
        assert client.get(path, headers=ADMIN_HEADERS).status_code == 200, path


def test_a_process_without_serving_has_no_engines(client):
    body = client.get("/admin/engines", headers=ADMIN_HEADERS).json()
    assert body["serving"] is False and body["data"] == []
    assert "does not serve" in body["message"]


def test_engines_show_state_and_loaded_adapters(make_settings, fake_engine_url, peft_adapter):
    settings = make_settings(engine_urls=[fake_engine_url, "http://127.0.0.1:9"])
    platform = Platform.open(settings)
    try:
        app = create_app(platform=platform, serve=ServeOptions(request_log=False),
                         jobs={"concurrency": 0})
        with TestClient(app) as c:
            acme = tenant_key(c, "acme")
            for _ in range(2):
                register_adapter_dir(platform, "acme", "support", peft_adapter)
            r = c.post("/v1/adapters/support/promote", json={"version": 2}, headers=acme)
            assert r.status_code == 200, r.text
            body = c.get("/admin/engines", headers=ADMIN_HEADERS).json()
    finally:
        platform.close()
    assert body["serving"] is True
    up, down = body["data"]
    assert (up["name"], up["url"], up["ready"], up["state"]) == (
        "engine-0", fake_engine_url, True, "ready")
    assert up["loaded_adapters"] == ["acme.support.v2"] and up["in_flight"] == 0
    assert up["capacity"] == settings.max_cpu_loras
    assert (down["name"], down["ready"], down["state"], down["loaded_adapters"]) == (
        "engine-1", False, "down", [])


def test_job_queue_spans_tenants_and_drops_finished_jobs(client):
    ids = {}
    for tenant in ("acme", "globex"):
        headers = tenant_key(client, tenant)
        file_id = upload(client, headers, classification_lines(20)).json()["id"]
        r = client.post("/v1/fine_tuning/jobs", headers=headers, json={
            "model": "base", "training_file": file_id, "suffix": "intent",
            "task": "classification"})
        assert r.status_code == 200, r.text
        ids[tenant] = (r.json()["id"], headers)
    body = client.get("/admin/jobs", headers=ADMIN_HEADERS).json()
    assert [(j["id"], j["organization_id"]) for j in body["data"]] == [
        (ids["acme"][0], "acme"), (ids["globex"][0], "globex")]
    assert body["has_more"] is False
    assert client.get("/admin/jobs?limit=1", headers=ADMIN_HEADERS).json()["has_more"] is True

    job_id, headers = ids["acme"]
    assert client.post(f"/v1/fine_tuning/jobs/{job_id}/cancel", headers=headers).status_code == 200
    body = client.get("/admin/jobs", headers=ADMIN_HEADERS).json()
    assert [j["id"] for j in body["data"]] == [ids["globex"][0]]


def test_monitor_events_span_tenants_newest_first(client, platform, peft_adapter):
    for tenant, adapter in (("acme", "support"), ("globex", "bot")):
        headers = tenant_key(client, tenant)
        register_adapter_dir(platform, tenant, adapter, peft_adapter)
        r = client.put(f"/v1/adapters/{adapter}/policy", json={"cooldown_hours": 1},
                       headers=headers)
        assert r.status_code == 200, r.text
    body = client.get("/admin/monitor/events", headers=ADMIN_HEADERS).json()
    assert [(e["tenant"], e["adapter"], e["type"]) for e in body["data"]] == [
        ("globex", "bot", "policy"), ("acme", "support", "policy")]
    assert body["data"][0]["message"] == "retrain policy set"
    assert client.get("/admin/monitor/events?type=decision",
                      headers=ADMIN_HEADERS).json()["data"] == []
    assert client.get("/admin/monitor/events?limit=1",
                      headers=ADMIN_HEADERS).json()["has_more"] is True
