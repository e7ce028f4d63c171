"""Admin, key and registry routes over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.platform import Platform
from tests.support.api import ADMIN_HEADERS, tenant_key
from tests.support.archives import tar_dir, tar_gz
from tuneloop.app import create_app

ADMIN = ADMIN_HEADERS


@pytest.fixture
def client(api_client):
    return api_client


def _register(client, headers, name, archive: bytes, **form):
    return client.post(
        f"/v1/adapters/{name}/versions", headers=headers,
        files={"file": ("adapter.tar.gz", archive, "application/gzip")}, data=form,
    )


def test_keys_are_stored_hashed_and_resolve_to_one_tenant(client, platform):
    a = tenant_key(client, "acme")
    tenant_key(client, "globex")
    clear = a["Authorization"].split()[1]
    with platform.store.read() as s:
        stored = [row[0] for row in s.execute(text("SELECT key_hash FROM api_keys"))]
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM api_keys")) for v in row)
    assert clear not in dump and clear[3:] not in dump
    assert all(len(h) == 64 for h in stored)
    r = client.get("/v1/adapters", headers=a)
    assert r.status_code == 200 and r.json()["data"] == []


def test_auth_errors(client):
    assert client.get("/v1/adapters").status_code == 401
    r = client.get("/v1/adapters", headers={"Authorization": "Bearer tl-wrong"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    a = tenant_key(client, "acme")
    assert client.post("/admin/tenants", json={"name": "x"}, headers=a).status_code == 403
    assert client.post("/admin/tenants", json={"name": "Bad Name"}, headers=ADMIN).status_code == 400
    assert client.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN).status_code == 409


def test_revoked_key_and_disabled_tenant_are_refused(client):
    a = tenant_key(client, "acme")
    keys = client.get("/admin/tenants/acme/keys", headers=ADMIN).json()["data"]
    assert client.delete(f"/admin/tenants/acme/keys/{keys[0]['id']}", headers=ADMIN).status_code == 200
    assert client.get("/v1/adapters", headers=a).status_code == 401
    b = tenant_key(client, "globex")
    client.post("/admin/tenants/globex/disable", headers=ADMIN)
    assert client.get("/v1/adapters", headers=b).status_code == 401
    client.post("/admin/tenants/globex/enable", headers=ADMIN)
    assert client.get("/v1/adapters", headers=b).status_code == 200


def test_malformed_json_is_a_400_with_openai_error_body(client):
    r = client.post("/admin/tenants", content=b"{not json", headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]["message"]


def test_register_promote_rollback_and_history(client, lora_factory):
    a = tenant_key(client, "acme")
    archive = tar_dir(lora_factory(8))
    r1 = _register(client, a, "support", archive, lineage='{"dataset": "d1"}')
    assert r1.status_code == 201, r1.text
    assert r1.json()["id"] == "support@v1"
    r2 = _register(client, a, "support", archive)
    assert r2.json()["version"] == 2
    shown = client.get("/v1/adapters/support", headers=a).json()
    assert shown["champion"] == "support@v1", "the first version becomes champion"
    assert shown["versions"][0]["lineage"]["dataset"] == "d1"
    r = client.post("/v1/adapters/support/promote", json={"version": 2}, headers=a)
    assert r.status_code == 200 and r.json()["champion"] == "support@v2"
    r = client.post("/v1/adapters/support/rollback", headers=a)
    assert r.json()["champion"] == "support@v1"
    assert [h["action"] for h in r.json()["history"]] == ["promote", "promote", "rollback"]
    assert client.post("/v1/adapters/support/promote", json={"version": 9}, headers=a).status_code == 404


def test_the_adapter_list_can_leave_version_details_out(client, lora_factory):
    a = tenant_key(client, "acme")
    archive = tar_dir(lora_factory(8))
    for name in ("alpha", "beta", "beta"):
        _register(client, a, name, archive, metrics='{"accuracy": 0.9}', lineage='{"d": 1}')
    full = client.get("/v1/adapters", headers=a).json()["data"]
    brief = client.get("/v1/adapters?metrics=false", headers=a).json()["data"]
    assert [(x["name"], len(x["versions"])) for x in full] == [("alpha", 1), ("beta", 2)]
    assert full[1]["versions"][1]["metrics"]["accuracy"] == 0.9
    assert full[1]["versions"][1]["lineage"]["d"] == 1
    assert [(x["name"], x["champion"], [v["id"] for v in x["versions"]]) for x in brief] == [
        (x["name"], x["champion"], [v["id"] for v in x["versions"]]) for x in full]
    assert all(v["metrics"] == {} and v["lineage"] == {} for x in brief for v in x["versions"])


def test_classification_adapter_stores_labels_and_template(client, lora_factory):
    a = tenant_key(client, "acme")
    r = _register(client, a, "intent", tar_dir(lora_factory(8)), task="classification",
                  labels='["billing", "tech", "sales"]')
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["labels"] == ["billing", "tech", "sales"]
    assert "{text}" in body["prompt_template"]
    r = _register(client, a, "intent2", tar_dir(lora_factory(8)), task="classification", labels="only")
    assert r.status_code == 400 and "at least 2" in r.json()["error"]["message"]


@pytest.mark.parametrize(("form", "fix"), [
    ({"prompt_template": "{text:>200000000}"}, "write {text} alone"),
    ({"prompt_template": "{text!x}"}, "write {text} alone"),
    ({"prompt_template": "{text} }"}, "escape literal braces"),
    ({"labels": "[" + ", ".join(f'"l{i}"' for i in range(20_000)) + "]"}, "TUNELOOP_MAX_LABELS"),
    ({"labels": '["a", "' + "b" * 65 + '"]'}, "TUNELOOP_MAX_LABEL_CHARS"),
])
def test_unbounded_classification_specs_are_refused(client, lora_factory, form, fix):
    a = tenant_key(client, "acme")
    form = {"task": "classification", "labels": '["yes", "no"]', **form}
    r = _register(client, a, "intent", tar_dir(lora_factory(8)), **form)
    assert r.status_code == 400 and fix in r.json()["error"]["message"], r.text


def test_promoting_a_version_beyond_the_store_integer_is_400(client, lora_factory):
    a = tenant_key(client, "acme")
    assert _register(client, a, "bot", tar_dir(lora_factory(8))).status_code == 201
    r = client.post("/v1/adapters/bot/promote", json={"version": 2**70}, headers=a)
    assert r.status_code == 400 and "version" in r.json()["error"]["message"]


def test_bad_uploads_are_rejected_with_clear_messages(client, lora_factory, foreign_lora):
    a = tenant_key(client, "acme")
    r = _register(client, a, "x", tar_dir(foreign_lora))
    assert r.status_code == 400 and "different base model" in r.json()["error"]["message"]
    r = _register(client, a, "x", tar_dir(lora_factory(16)))
    assert r.status_code == 400 and "rank 16" in r.json()["error"]["message"]
    r = _register(client, a, "x", tar_gz([("../x", b"1", "file")]))
    assert r.status_code == 400 and ".." in r.json()["error"]["message"]
    r = _register(client, a, "x", tar_gz([("adapter_config.json", b"/etc/passwd", "symlink")]))
    assert r.status_code == 400 and "link" in r.json()["error"]["message"]
    r = _register(client, a, "x", b"not an archive")
    assert r.status_code == 400
    assert client.get("/v1/adapters/x", headers=a).status_code == 404, "nothing half-registered"


def test_oversize_upload_is_413(make_settings, database_url, lora_factory):
    p = Platform.open(make_settings(database_url=database_url, max_adapter_bytes=10_000))
    with TestClient(create_app(platform=p)) as client:
        a = tenant_key(client, "acme")
        r = _register(client, a, "x", tar_dir(lora_factory(8)))
        assert r.status_code == 413
        assert "TUNELOOP_MAX_ADAPTER_BYTES" in r.json()["error"]["message"]
    p.close()


def test_tenant_isolation_on_every_registry_route(client, lora_factory):
    a = tenant_key(client, "acme")
    b = tenant_key(client, "globex")
    assert _register(client, a, "secret", tar_dir(lora_factory(8))).status_code == 201
    assert client.get("/v1/adapters", headers=b).json()["data"] == []
    for method, path, kwargs in [
        ("get", "/v1/adapters/secret", {}),
        ("post", "/v1/adapters/secret/promote", {"json": {"version": 1}}),
        ("post", "/v1/adapters/secret/rollback", {}),
    ]:
        r = getattr(client, method)(path, headers=b, **kwargs)
        assert r.status_code == 404, (path, r.text)
        assert "secret" in r.json()["error"]["message"]
    # Registering under the same name as B creates B's own adapter; A's is untouched.
    assert _register(client, b, "secret", tar_dir(lora_factory(8))).json()["id"] == "secret@v1"
    assert len(client.get("/v1/adapters/secret", headers=a).json()["versions"]) == 1


def test_concurrent_promotes_leave_exactly_one_champion(platform, lora_factory):
    from services import registry
    from services.adapter_intake import register_adapter_dir
    from services.tenants import create_tenant, get_tenant

    with platform.store.write() as s:
        create_tenant(s, "acme")
    for _ in range(4):
        register_adapter_dir(platform, "acme", "bot", lora_factory(8))
    errors: list[Exception] = []

    def worker(version: int) -> None:
        try:
            for _ in range(5):
                with platform.store.write() as s:
                    registry.promote(s, get_tenant(s, "acme"), "bot", version)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with platform.store.read() as s:
        adapter = registry.get_adapter(s, get_tenant(s, "acme"), "bot")
        history = registry.champion_history(s, adapter)
        versions = {v.id: v.version for v in registry.list_versions(s, adapter)}
    assert adapter.champion_version_id in versions
    # The history is a chain: each switch starts where the previous one ended.
    for before, after in zip(history, history[1:]):
        assert after.from_version_id == before.to_version_id
    assert history[-1].to_version_id == adapter.champion_version_id
