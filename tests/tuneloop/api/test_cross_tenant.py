"""Another tenant's objects answer 404 on every route, exactly like missing ones, whichever way
they are named (alias, ``name@vN``, the engine-side name), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from services.adapter_intake import register_adapter_dir
from services.platform import Platform
from services.store.models import RequestRecord
from services.tenants import create_key, create_tenant, get_tenant
from tests.support.api import chat_lines
from training.jobs.files import store_file
from training.jobs.intake import JobRequest, create_job
from tuneloop.app import create_app
from tuneloop.state import ServeOptions


@pytest.fixture
def world(make_settings, database_url, peft_adapter):
    settings = make_settings(database_url=database_url, engine_urls=["http://127.0.0.1:9"],
                             tenant_rate_per_s=1e6)
    platform = Platform.open(settings)
    with platform.store.write() as s:
        keys = {}
        for name in ("owner", "other"):
            create_tenant(s, name)
            keys[name] = {"Authorization": f"Bearer {create_key(s, name).key}"}
    with platform.store.read() as s:
        owner = get_tenant(s, "owner")
        s.expunge(owner)
    register_adapter_dir(platform, owner, "secret", peft_adapter)
    register_adapter_dir(platform, owner, "secret", peft_adapter)  # v2
    rows = chat_lines()
    file = store_file(platform, owner, rows, "train.jsonl")
    job = create_job(platform, owner, JobRequest(model="base", training_file=file.id))
    with platform.store.write() as s:
        s.add(RequestRecord(id="chatcmpl-owner1", tenant_id=owner.id, adapter="secret",
                            adapter_version=1, route="chat", status=200, input="hi", output="x"))
    with TestClient(create_app(platform=platform, serve=ServeOptions())) as client:
        yield client, keys, {"file": file.id, "job": job.id}
    platform.close()


def test_every_route_answers_404_for_another_tenants_objects(world):
    client, keys, ids = world
    other = keys["other"]
    file_id, job_id = ids["file"], ids["job"]
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    calls = [
        ("GET", "/v1/adapters/secret", None), ("GET", "/v1/adapters/secret/policy", None),
        ("PUT", "/v1/adapters/secret/policy", {"enabled": True}),
        ("DELETE", "/v1/adapters/secret/policy", None),
        ("GET", "/v1/adapters/secret/drift", None), ("GET", "/v1/adapters/secret/events", None),
        ("GET", "/v1/adapters/secret/retrains", None),
        ("POST", "/v1/adapters/secret/promote", {"version": 2}),
        ("POST", "/v1/adapters/secret/rollback", {}),
        ("GET", "/v1/adapters/secret/versions/2/content", None),
        ("GET", f"/v1/files/{file_id}", None), ("GET", f"/v1/files/{file_id}/content", None),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}", None),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}/events", None),
        ("GET", f"/v1/fine_tuning/jobs/{job_id}/checkpoints", None),
        ("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel", None),
        ("POST", "/v1/feedback", {"response_id": "chatcmpl-owner1", "rating": 1}),
        ("GET", "/v1/models/secret", None), ("GET", "/v1/models/secret@v2", None),
    ]
    for model in ("secret", "secret@v1", "secret@v2", "owner.secret.v1"):
        calls += [("POST", "/v1/chat/completions", {"model": model, **chat}),
                  ("POST", "/v1/completions", {"model": model, "prompt": "hi"}),
                  ("POST", "/v1/classify", {"model": model, "input": "hi"})]
    for method, path, body in calls:
        theirs = client.request(method, path, headers=keys["owner"], json=body)
        mine = client.request(method, path, headers=other, json=body)
        assert mine.status_code == 404, (method, path, body, mine.status_code, mine.text)
        # the owner reaches it (a 404 for both would prove nothing), except engine-side names
        assert theirs.status_code != 404 or "owner.secret" in json.dumps(body), (method, path)
    # Jobs answer like OpenAI (400 for a bad training file or model); another tenant's file or
    # model gets exactly the answer a missing one gets.
    foreign = client.post("/v1/fine_tuning/jobs", headers=other,
                          json={"model": "base", "training_file": file_id})
    missing = client.post("/v1/fine_tuning/jobs", headers=other,
                          json={"model": "base", "training_file": "file-0123456789abcdef01234567"})
    assert (foreign.status_code, foreign.json()["error"]["code"]) == (
        missing.status_code, missing.json()["error"]["code"]) and foreign.status_code < 500
    assert (foreign.json()["error"]["message"].replace(file_id, "ID")
            == missing.json()["error"]["message"].replace("file-0123456789abcdef01234567", "ID"))
    own = client.post("/v1/files", headers=other, data={"purpose": "fine-tune"},
                      files={"file": ("t.jsonl", chat_lines(), "application/jsonl")})
    assert own.status_code < 300, own.text
    own = own.json()
    r = client.post("/v1/fine_tuning/jobs", headers=other,
                    json={"model": "secret@v1", "training_file": own["id"]})
    nosuch = client.post("/v1/fine_tuning/jobs", headers=other,
                         json={"model": "nosuch@v1", "training_file": own["id"]})
    assert r.status_code in (400, 404) and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["message"].replace("secret", "X") == \
        nosuch.json()["error"]["message"].replace("nosuch", "X")
    listed = client.get("/v1/adapters", headers=other).json()["data"]
    assert listed == []
    assert file_id not in {f["id"] for f in client.get("/v1/files", headers=other).json()["data"]}
    assert job_id not in {j["id"] for j in
                          client.get("/v1/fine_tuning/jobs", headers=other).json()["data"]}
    models = {m["id"] for m in client.get("/v1/models", headers=other).json().get("data", [])}
    assert not any("secret" in m for m in models)
