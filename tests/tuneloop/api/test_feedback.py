"""POST /v1/feedback: idempotent, tenant-scoped, validated against the response's adapter."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.adapter_intake import register_adapter_dir
from services.platform import Platform
from services.store.models import FeedbackRecord, RequestRecord
from services.tenants import create_key, create_tenant, get_tenant
from tuneloop.app import create_app


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
    def post(body, who="acme"):
        return client.post("/v1/feedback", json=body, headers=keys[who])

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


async def _post_concurrently(app, key_headers: dict, bodies: list[dict]) -> list:
    import asyncio

    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers=key_headers) as http:
        return await asyncio.gather(*(http.post("/v1/feedback", json=b) for b in bodies))


def test_concurrent_duplicates_are_stored_once(setup):
    import asyncio

    client, keys, p = setup
    body = {"response_id": "chat-1", "rating": 1, "id": "dup"}
    bulk = {"data": [{"response_id": "chat-1", "rating": -1, "id": f"bulk-{i}"} for i in range(30)]}
    responses = asyncio.run(_post_concurrently(client.app, keys["acme"], [body] * 20 + [bulk] * 5))
    singles, bulks = responses[:20], responses[20:]
    assert sorted(r.status_code for r in singles) == [200] * 19 + [201]
    assert sum(r.json()["created"] for r in singles) == 1
    assert all(r.status_code == 200 for r in bulks)
    assert sum(d["created"] for r in bulks for d in r.json()["data"]) == 30
    with p.store.read() as s:
        ids = list(s.scalars(select(FeedbackRecord.id)))
    assert len(ids) == 31 and len(set(ids)) == 31


def test_two_gateways_on_one_store_store_a_duplicate_once(setup, make_settings, database_url):
    """Two processes' worth of app (own platform, own batcher) racing on the same ids."""
    import asyncio

    client, keys, p = setup
    other = Platform.open(make_settings(database_url=database_url))
    try:
        other_app = create_app(platform=other)
        data = [{"response_id": "chat-1", "rating": 1, "id": f"race-{i}"} for i in range(1000)]
        chunks = [{"data": data[i:i + 100]} for i in range(0, 1000, 100)]

        async def race():
            return await asyncio.gather(
                _post_concurrently(client.app, keys["acme"], chunks),
                _post_concurrently(other_app, keys["acme"], chunks[::-1]),
            )

        with TestClient(other_app):  # the second gateway is running
            a, b = asyncio.run(race())
    finally:
        other.close()
    assert all(r.status_code == 200 for r in a + b)
    created = [d["created"] for r in a + b for d in r.json()["data"]]
    assert sum(created) == 1000, "each id is reported created exactly once"
    with p.store.read() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRecord)) == 1000


def test_bulk_with_bad_items_names_them_and_stores_nothing_from_that_request(setup):
    import asyncio

    client, keys, p = setup
    bad = {"data": [
        {"response_id": "chat-1", "rating": 1, "id": "ok-1"},
        {"response_id": "missing", "rating": 1, "id": "x-1"},
        {"response_id": "clf-1", "label": "weather", "id": "x-2"},
    ]}
    good = {"data": [{"response_id": "clf-1", "label": "tech", "id": "ok-2"}]}
    r_bad, r_good = asyncio.run(_post_concurrently(client.app, keys["acme"], [bad, good]))
    assert r_bad.status_code == 400
    message = r_bad.json()["error"]["message"]
    assert "data[1]" in message and "'missing'" in message
    assert "data[2]" in message and "'weather'" in message and "data[0]" not in message
    assert r_good.status_code == 200, "a concurrent request is not failed by another's bad item"
    with p.store.read() as s:
        assert list(s.scalars(select(FeedbackRecord.id))) == [f"t{get_acme_id(p)}:ok-2"]
    only_missing = client.post("/v1/feedback", headers=keys["acme"], json={"data": [
        {"response_id": "chat-1", "rating": 1}, {"response_id": "gone", "rating": 1}]})
    assert only_missing.status_code == 404 and "data[1]" in only_missing.json()["error"]["message"]
    invalid = client.post("/v1/feedback", headers=keys["acme"], json={"data": [
        {"response_id": "chat-1", "rating": 1}, {"response_id": "chat-1", "rating": 3}]})
    assert invalid.status_code == 400 and "data[1]" in invalid.json()["error"]["message"]


def get_acme_id(p) -> int:
    with p.store.read() as s:
        return get_tenant(s, "acme").id


def test_resend_of_a_stored_id_returns_the_record_unchanged(setup):
    client, keys, p = setup
    first = client.post("/v1/feedback", headers=keys["acme"],
                        json={"response_id": "clf-1", "label": "tech", "id": "keep"})
    assert first.status_code == 201
    again = client.post("/v1/feedback", headers=keys["acme"],
                        json={"response_id": "clf-1", "label": "billing", "id": "keep"})
    assert again.status_code == 200 and again.json()["created"] is False
    other_tenant = client.post("/v1/feedback", headers=keys["globex"],
                               json={"response_id": "clf-1", "label": "tech", "id": "keep"})
    assert other_tenant.status_code == 404, "ids are per tenant; globex cannot see acme's response"
    with p.store.read() as s:
        rows = list(s.scalars(select(FeedbackRecord)))
    assert [(r.label, r.tenant_id) for r in rows] == [("tech", get_acme_id(p))]
