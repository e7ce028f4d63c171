"""POST /v1/feedback: idempotent, tenant-scoped, validated against the response's adapter."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.adapter_intake import register_adapter_dir
from services.app import create_app
from services.platform import Platform
from services.store.models import FeedbackRecord, RequestRecord
from services.tenants import create_key, create_tenant, get_tenant


@pytest.fixture
def setup(make_settings, database_url, lora_factory):
    p = Platform.open(make_settings(database_url=database_url))
    with p.store.write() as s:
        keys = {}
        for name in ("acme", "globex"):
            create_tenant(s, name)
            keys[name] = {"Authorization": f"Bearer {create_key(s, name).key}"}
    register_adapter_dir(p, "acme", "intent", lora_factory(8), task="classification",
                         labels=["billing", "tech"])
    with p.store.write() as s:
        acme = get_tenant(s, "acme")
        s.add(RequestRecord(id="clf-1", tenant_id=acme.id, route="classify", status=200,
                            adapter="intent", adapter_version=1, input="my card was charged twice",
                            output="tech"))
        s.add(RequestRecord(id="chat-1", tenant_id=acme.id, route="chat", status=200, input=[], output="hi"))
    with TestClient(create_app(platform=p)) as client:
        yield client, keys, p
    p.close()


def test_feedback_is_idempotent_by_id(setup):
    client, keys, p = setup
    body = {"response_id": "clf-1", "label": "billing", "id": "fb-1"}
    first = client.post("/v1/feedback", json=body, headers=keys["acme"])
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/v1/feedback", json=body, headers=keys["acme"])
    assert again.status_code == 200 and again.json()["created"] is False
    with p.store.read() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRecord)) == 1
        row = s.scalar(select(FeedbackRecord))
    assert (row.adapter, row.adapter_version, row.label) == ("intent", 1, "billing")


def test_batch_feedback_counts_back(setup):
    client, keys, p = setup
    data = [{"response_id": "chat-1", "rating": 1 if i % 2 else -1, "id": f"b{i}"} for i in range(50)]
    r = client.post("/v1/feedback", json={"data": data + data[:10]}, headers=keys["acme"])
    assert r.status_code == 200
    assert sum(d["created"] for d in r.json()["data"]) == 50
    with p.store.read() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRecord)) == 50


def test_feedback_errors(setup):
    client, keys, _ = setup
    post = lambda body, who="acme": client.post("/v1/feedback", json=body, headers=keys[who])  # noqa: E731
    assert post({"response_id": "nope", "rating": 1}).status_code == 404
    assert post({"response_id": "clf-1", "rating": 1}, "globex").status_code == 404, "tenant-scoped"
    r = post({"response_id": "clf-1", "label": "weather"})
    assert r.status_code == 400 and "billing" in r.json()["error"]["message"]
    r = post({"response_id": "chat-1", "label": "billing"})
    assert r.status_code == 400 and "classification" in r.json()["error"]["message"]
    r = post({"response_id": "chat-1", "rating": 5})
    assert r.status_code == 400 and "rating" in r.json()["error"]["message"]
    assert post({"response_id": "chat-1"}).status_code == 400
    r = client.post("/v1/feedback", content=b"{oops", headers={**keys["acme"], "content-type": "application/json"})
    assert r.status_code == 400
    assert client.post("/v1/feedback", json={"response_id": "chat-1", "rating": 1}).status_code == 401
