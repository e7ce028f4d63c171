"""Per-tenant quotas over HTTP on SQLite and PostgreSQL: files, adapters, versions, feedback.

Over a quota answers 403 ``quota_exceeded`` naming the count, the limit and its setting, before
the work is done; another tenant is not affected.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.platform import Platform
from services.store.models import FeedbackRecord, RequestRecord
from services.tenants import get_tenant
from tests.support.api import chat_lines, classification_lines, tenant_key, upload
from tests.support.archives import tar_dir
from tuneloop.app import create_app


@pytest.fixture
def platform(make_settings, database_url):
    p = Platform.open(make_settings(
        database_url=database_url, tenant_max_files=2, tenant_max_adapters=1,
        tenant_max_versions_per_adapter=2, tenant_max_feedback_records=3))
    yield p
    p.close()


@pytest.fixture
def client(platform):
    with TestClient(create_app(platform=platform, jobs={"concurrency": 0})) as c:
        yield c


def _quota_error(r, setting: str, count: str) -> str:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert setting in error["message"] and count in error["message"], error["message"]
    return error["message"]


def test_files_over_the_quota_are_refused_before_validation(client, monkeypatch):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    for _ in range(2):
        assert upload(client, a, classification_lines()).status_code == 200
    from training.jobs import files

    def never(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError("the upload was validated although the tenant is at its quota")

    monkeypatch.setattr(files, "validate_file", never)
    message = _quota_error(upload(client, a, classification_lines()), "TUNELOOP_TENANT_MAX_FILES",
                           "2 dataset files")
    assert "GET /v1/files" in message  # how to free room
    monkeypatch.undo()
    assert upload(client, b, classification_lines()).status_code == 200  # per tenant
    assert len(client.get("/v1/files", headers=a).json()["data"]) == 2


def _register(client, headers, name, archive: bytes):  # noqa: ANN001
    return client.post(f"/v1/adapters/{name}/versions", headers=headers,
                       files={"file": ("adapter.tar.gz", archive, "application/gzip")},
                       data={"task": "chat"})


def test_adapters_and_versions_over_their_quotas_are_refused(client, lora_factory):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    archive = tar_dir(lora_factory(8))
    for _ in range(2):
        assert _register(client, a, "support", archive).status_code == 201
    _quota_error(_register(client, a, "support", archive),
                 "TUNELOOP_TENANT_MAX_VERSIONS_PER_ADAPTER", "adapter 'support' has 2 versions")
    _quota_error(_register(client, a, "sales", archive), "TUNELOOP_TENANT_MAX_ADAPTERS",
                 "tenant 'acme' has 1 adapters")
    assert _register(client, b, "sales", archive).status_code == 201  # per tenant
    # A fine-tuning job for a new adapter name is refused at creation, not after training.
    file_id = upload(client, a, classification_lines(40)).json()["id"]
    r = client.post("/v1/fine_tuning/jobs", headers=a, json={
        "model": "base", "training_file": file_id, "suffix": "sales", "task": "classification"})
    _quota_error(r, "TUNELOOP_TENANT_MAX_ADAPTERS", "1 adapters")
    chat_file = upload(client, a, chat_lines(8)).json()["id"]
    r = client.post("/v1/fine_tuning/jobs", headers=a, json={
        "model": "support", "training_file": chat_file, "suffix": "support"})
    _quota_error(r, "TUNELOOP_TENANT_MAX_VERSIONS_PER_ADAPTER", "adapter 'support' has 2")


def test_feedback_over_the_quota_is_refused_whole(client, platform):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    with platform.store.write() as s:
        for tenant in ("acme", "globex"):
            s.add(RequestRecord(id=f"chat-{tenant}", tenant_id=get_tenant(s, tenant).id,
                                route="chat", status=200, input=[], output="hi"))

    def post(headers, ids, tenant="acme"):  # noqa: ANN001
        data = [{"response_id": f"chat-{tenant}", "rating": 1, "id": i} for i in ids]
        return client.post("/v1/feedback", json={"data": data}, headers=headers)

    assert post(a, ["f1", "f2"]).status_code == 200
    _quota_error(post(a, ["f3", "f4"]), "TUNELOOP_TENANT_MAX_FEEDBACK_RECORDS",
                 "you have 2 feedback records and this request adds 2")
    assert post(a, ["f1", "f2"]).status_code == 200, "a resend stores nothing: never refused"
    assert post(a, ["f3"]).status_code == 200
    _quota_error(post(a, ["f5"]), "TUNELOOP_TENANT_MAX_FEEDBACK_RECORDS", "3 feedback records")
    assert post(b, ["f1", "f2", "f3"], "globex").status_code == 200  # per tenant
    with platform.store.read() as s:
        assert s.scalar(select(func.count()).select_from(FeedbackRecord)) == 6
