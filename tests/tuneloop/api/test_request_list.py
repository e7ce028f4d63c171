"""GET /v1/adapters/{name}/requests: an adapter's latest logged requests with their feedback,
newest first, bounded, previews cut, tenant-scoped (another tenant's adapter is 404)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from services.adapter_intake import register_adapter_dir
from services.store.models import FeedbackRecord, RequestRecord, utcnow
from services.tenants import create_key, create_tenant, get_tenant
from tuneloop.api.feedback import PREVIEW_CHARS
from tuneloop.app import create_app


@pytest.fixture
def setup(api_platform, lora_factory):
    p = api_platform
    keys = {}
    with p.store.write() as s:
        for name in ("acme", "globex"):
            create_tenant(s, name)
            keys[name] = {"Authorization": f"Bearer {create_key(s, name).key}"}
    register_adapter_dir(p, "acme", "support", lora_factory(8))
    register_adapter_dir(p, "globex", "other", lora_factory(8))
    now = utcnow() + timedelta(seconds=5)  # after the adapter's creation
    with p.store.write() as s:
        acme = get_tenant(s, "acme")
        for i in range(30):
            s.add(RequestRecord(
                id=f"chat-{i:02d}", tenant_id=acme.id, route="chat", status=200,
                adapter="support", adapter_version=1 + i % 2,
                input=[{"role": "system", "content": "be brief"},
                       {"role": "user", "content": f"question {i}"}],
                output=f"answer {i}", created_at=now + timedelta(seconds=i)))
        s.add(RequestRecord(id="chat-long", tenant_id=acme.id, route="chat", status=200,
                            adapter="support", adapter_version=1, input="x" * 5000,
                            output=None, created_at=now + timedelta(seconds=100)))
        s.add(RequestRecord(id="chat-other", tenant_id=acme.id, route="chat", status=200,
                            adapter=None, input="base", output="base",
                            created_at=now + timedelta(seconds=200)))
        s.add(FeedbackRecord(id="fb-1", tenant_id=acme.id, response_id="chat-29",
                             adapter="support", adapter_version=2, rating=-1,
                             correction="a better answer", created_at=now))
        s.add(FeedbackRecord(id="fb-2", tenant_id=acme.id, response_id="chat-29",
                             adapter="support", adapter_version=2, label="billing",
                             created_at=now + timedelta(seconds=1)))
    with TestClient(create_app(platform=p)) as client:
        yield client, keys


def test_latest_requests_newest_first_with_their_feedback(setup):
    client, keys = setup
    r = client.get("/v1/adapters/support/requests", headers=keys["acme"])
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 20, "20 by default"
    assert [d["id"] for d in data[:3]] == ["chat-long", "chat-29", "chat-28"]
    assert "chat-other" not in {d["id"] for d in data}, "only this adapter's requests"
    long = data[0]
    assert len(long["input"]) == PREVIEW_CHARS and long["input"].endswith("…")
    assert long["output"] is None and long["feedback"] == []
    latest = data[1]
    assert (latest["input"], latest["output"], latest["model"], latest["version"]) == (
        "question 29", "answer 29", "support@v2", 2)
    assert [(f["id"], f["rating"], f["label"], f["correction"]) for f in latest["feedback"]] == [
        ("fb-1", -1, None, "a better answer"), ("fb-2", None, "billing", None)]
    assert data[2]["feedback"] == []

    r = client.get("/v1/adapters/support/requests?limit=100", headers=keys["acme"])
    assert len(r.json()["data"]) == 31


def test_limits_and_tenant_isolation(setup):
    client, keys = setup
    for bad in (0, 101):
        r = client.get(f"/v1/adapters/support/requests?limit={bad}", headers=keys["acme"])
        assert r.status_code == 400, (bad, r.text)
    r = client.get("/v1/adapters/support/requests", headers=keys["globex"])
    assert r.status_code == 404, "another tenant's adapter does not exist for globex"
    r = client.get("/v1/adapters/other/requests", headers=keys["globex"])
    assert r.status_code == 200 and r.json()["data"] == []
    assert client.get("/v1/adapters/support/requests").status_code == 401
