"""Policy, drift, events and retrains routes over HTTP on SQLite and PostgreSQL: validation with
field messages, tenant isolation, and the monitor's reports as the API shows them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from monitoring.config import MonitorConfig
from monitoring.loop import Monitor
from monitoring.metrics import Metrics
from services.adapter_intake import register_adapter_dir
from services.platform import Platform
from services.store.models import RequestRecord, Tenant, utcnow
from tests.support.api import ADMIN_HEADERS, tenant_key
from tests.support.vader import NEW

ADMIN = ADMIN_HEADERS


@pytest.fixture
def client(api_client):
    return api_client


def tenant_row(platform: Platform, name: str) -> Tenant:
    from sqlalchemy import select

    with platform.store.read() as session:
        return session.scalars(select(Tenant).where(Tenant.name == name)).one()


@pytest.fixture
def acme(client, platform, peft_adapter):
    """Tenant acme with a classification adapter 'sentiment' (v1 registered from outside)."""
    headers = tenant_key(client, "acme")
    register_adapter_dir(platform, tenant_row(platform, "acme"), "sentiment", peft_adapter,
                         task="classification", labels=["negative", "neutral", "positive"])
    return headers


def test_policy_defaults_then_put_get_delete(client, acme):
    r = client.get("/v1/adapters/sentiment/policy", headers=acme)
    assert r.status_code == 200
    body = r.json()
    assert body["configured"] is False and body["policy"]["on_drift"] is True
    policy = {"schedule_hours": 24, "drift_windows_m": 2, "drift_windows_n": 4,
              "cooldown_hours": 1, "auto_promote": False, "dry_run": True}
    r = client.put("/v1/adapters/sentiment/policy", json=policy, headers=acme)
    assert r.status_code == 200, r.text
    assert r.json()["configured"] is True and r.json()["updated_at"]
    got = client.get("/v1/adapters/sentiment/policy", headers=acme).json()["policy"]
    assert {k: got[k] for k in policy} == policy and got["gate_tolerance"] == 0.02
    # PUT replaces the whole policy (omitted fields take their defaults).
    client.put("/v1/adapters/sentiment/policy", json={"dry_run": False}, headers=acme)
    got = client.get("/v1/adapters/sentiment/policy", headers=acme).json()["policy"]
    assert got["schedule_hours"] is None and got["auto_promote"] is True
    events = client.get("/v1/adapters/sentiment/events?type=policy", headers=acme).json()["data"]
    assert [e["action"] for e in events] == ["set", "set"]
    r = client.delete("/v1/adapters/sentiment/policy", headers=acme)
    assert r.status_code == 200 and r.json()["configured"] is False
    assert client.get("/v1/adapters/sentiment/policy", headers=acme).json()["configured"] is False


@pytest.mark.parametrize("policy, words", [
    ({"drift_windows_m": 4, "drift_windows_n": 2},
     ["drift_windows_m (4) must be <= drift_windows_n (2)"]),
    ({"max_concurrent_jobs_per_tenant": 3, "max_concurrent_jobs_total": 2},
     ["max_concurrent_jobs_per_tenant (3)", "max_concurrent_jobs_total (2)"]),
    ({"cooldown_hours": -1}, ["cooldown_hours", "greater than or equal to 0"]),
    ({"gate_tolerance": 2}, ["gate_tolerance", "less than or equal to 1"]),
    ({"schedule_hours": 0}, ["schedule_hours", "greater than 0"]),
    ({"on_drift": "sometimes"}, ["on_drift", "boolean"]),
    ({"retrain_every": 3}, ["retrain_every", "Extra inputs are not permitted"]),
])
def test_invalid_policies_are_refused_with_field_messages(client, acme, policy, words):
    r = client.put("/v1/adapters/sentiment/policy", json=policy, headers=acme)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]
    assert client.get("/v1/adapters/sentiment/policy", headers=acme).json()["configured"] is False


@pytest.mark.parametrize("body", [
    b'{"cooldown_hours": Infinity}', b'{"schedule_hours": NaN}', b'{"gate_tolerance": NaN}',
    b'{"cooldown_hours": 1e300}'])
def test_non_finite_and_overflowing_numbers_are_refused(client, acme, body):
    r = client.put("/v1/adapters/sentiment/policy", content=body, headers={
        **acme, "Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert "finite number" in r.json()["error"]["message"] or "less than or equal" in \
        r.json()["error"]["message"]
    assert client.get("/v1/adapters/sentiment/policy", headers=acme).json()["configured"] is False


def test_a_body_that_is_not_json_is_refused(client, acme):
    r = client.put("/v1/adapters/sentiment/policy", content=b"{nope", headers={
        **acme, "Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_tenants_see_only_their_own_adapters(client, acme):
    globex = tenant_key(client, "globex")
    assert client.put("/v1/adapters/sentiment/policy", json={}, headers=acme).status_code == 200
    for method, path in [("get", "policy"), ("put", "policy"), ("delete", "policy"),
                         ("get", "drift"), ("get", "events"), ("get", "retrains")]:
        kwargs = {"json": {}} if method == "put" else {}
        r = getattr(client, method)(f"/v1/adapters/sentiment/{path}", headers=globex, **kwargs)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["message"] == "adapter 'sentiment' does not exist"
        r = getattr(client, method)(f"/v1/adapters/nothing/{path}", headers=acme, **kwargs)
        assert r.status_code == 404, (method, path)
    assert client.get("/v1/adapters/sentiment/policy").status_code == 401
    # globex's failed PUT changed nothing for acme
    assert client.get("/v1/adapters/sentiment/policy", headers=acme).json()["configured"]


def test_drift_route_shows_the_monitors_reports(client, platform, acme):
    empty = client.get("/v1/adapters/sentiment/drift", headers=acme).json()
    assert empty["champion"] == "sentiment@v1" and empty["monitored"] is False
    assert empty["input_drift"] is None and empty["history"] == []
    client.put("/v1/adapters/sentiment/policy", json={"drift_windows_m": 1, "drift_windows_n": 1},
               headers=acme)
    acme_row = tenant_row(platform, "acme")
    with platform.store.write() as session:
        start = utcnow() + timedelta(seconds=1)
        for i, row in enumerate(NEW[:60]):
            session.add(RequestRecord(
                id=f"clf-{uuid.uuid4().hex}", tenant_id=acme_row.id, adapter="sentiment",
                adapter_version=1, route="classify", status=200, input=row["text"],
                output=row["label"], created_at=start + timedelta(seconds=i)))
    metrics = Metrics()
    monitor = Monitor(platform, metrics=metrics, config=MonitorConfig(min_window=50))
    cycle = monitor.run_once(utcnow() + timedelta(minutes=5))[0]
    # v1 was registered from outside: no training file, so no reference for the drift test.
    assert cycle.drifted is None and "no training file" in cycle.input_drift["details"]["reference"]
    body = client.get("/v1/adapters/sentiment/drift", headers=acme).json()
    assert body["monitored"] is True and body["drift_alarm"] is False
    assert body["input_drift"]["status"] == "insufficient_data"
    assert body["input_drift"]["n_window"] == 60
    assert body["prediction_drift"]["status"] == "insufficient_data"
    assert body["quality"]["status"] == "insufficient_data"
    assert len(body["history"]) == 1 and body["history"][0]["version"] == 1
    events = client.get("/v1/adapters/sentiment/events", headers=acme).json()["data"]
    assert events[0]["type"] == "decision" and events[0]["reason"] == "no_trigger"
    assert events[0]["id"].startswith("monevent-")
    older = client.get(f"/v1/adapters/sentiment/events?before={events[0]['id'][9:]}",
                       headers=acme).json()["data"]
    assert [e["type"] for e in older] == ["policy"]
    assert client.get("/v1/adapters/sentiment/retrains", headers=acme).json()["data"] == []


def test_a_policy_cannot_ask_for_more_training_capacity_than_the_operator_gives(client, acme):
    r = client.put("/v1/adapters/sentiment/policy", headers=acme,
                   json={"max_concurrent_jobs_total": 1_000_000})
    assert r.status_code == 400
    assert "TUNELOOP_TRAIN_MAX_ACTIVE_JOBS" in r.json()["error"]["message"]
    r = client.put("/v1/adapters/sentiment/policy", headers=acme,
                   json={"max_concurrent_jobs_per_tenant": 50, "max_concurrent_jobs_total": 50})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_concurrent_jobs_per_tenant"
    r = client.put("/v1/adapters/sentiment/policy", headers=acme,
                   json={"max_concurrent_jobs_per_tenant": 2, "max_concurrent_jobs_total": 4})
    assert r.status_code == 200, r.text
