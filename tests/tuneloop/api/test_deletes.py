"""Deletes on SQLite and PostgreSQL with the official openai client where it has the call:
each delete is gone from the database and from the artifact store, refusals say what to do,
another tenant's objects are 404, shared blobs stay while referenced, and offboarding a tenant
leaves no row of it in any table."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.store.changes import read_counter
from services.store.models import (
    Adapter,
    AdapterVersion,
    Base,
    DatasetFile,
    FeedbackRecord,
    FineTuningCheckpoint,
    FineTuningJob,
    MonitorEvent,
    MonitorReport,
    RequestRecord,
    RetrainRun,
    Tenant,
)
from tests.support.api import ADMIN_HEADERS, chat_lines, classification_lines, tenant_key, upload
from tests.support.archives import tar_dir
from training.jobs.workspace import JobWorkspace
from tuneloop.app import create_app

JOBS = "/v1/fine_tuning/jobs"


@pytest.fixture
def client(platform):
    # A job manager that validates jobs but runs none: nothing here trains.
    with TestClient(create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 0.05})) as c:
        yield c


def sdk_for(client, headers) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=headers["Authorization"][7:],
                         http_client=client, max_retries=0)


def blob_gone(platform, key: str) -> bool:
    path = Path(platform.artifacts.root) / "blobs" / key[:2] / key
    return not platform.artifacts.exists(key) and not path.exists()


def register(client, headers, name, adapter_dir, **form):
    r = client.post(f"/v1/adapters/{name}/versions", headers=headers,
                    files={"file": ("adapter.tar.gz", tar_dir(adapter_dir), "application/gzip")},
                    data=form)
    assert r.status_code == 201, r.text
    return r.json()


def version_key(platform, name: str, version: int) -> str:
    with platform.store.read() as s:
        return s.scalar(select(AdapterVersion.artifact_key).join(
            Adapter, Adapter.id == AdapterVersion.adapter_id).where(
            Adapter.name == name, AdapterVersion.version == version))


def create_job(client, headers, file_id, suffix="support"):
    r = client.post(JOBS, headers=headers, json={"model": "base", "training_file": file_id,
                                                 "suffix": suffix})
    assert r.status_code == 200, r.text
    return r.json()["id"]


# -- files -------------------------------------------------------------------------------------


def test_file_delete_is_gone_from_the_database_and_the_artifact_store(client, platform, tmp_path):
    a = tenant_key(client, "acme")
    sdk = sdk_for(client, a)
    path = tmp_path / "train.jsonl"
    path.write_bytes(classification_lines())
    with open(path, "rb") as fh:
        created = sdk.files.create(file=fh, purpose="fine-tune")
    with platform.store.read() as s:
        key = s.get_one(DatasetFile, created.id).sha256
    assert platform.artifacts.exists(key)

    deleted = sdk.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with platform.store.read() as s:
        assert s.get(DatasetFile, created.id) is None
    assert blob_gone(platform, key)
    with pytest.raises(openai.NotFoundError):
        sdk.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        sdk.files.delete(created.id)
    assert list(sdk.files.list()) == []


def test_a_file_of_an_unfinished_job_is_refused_then_deletable_once_the_job_ended(client, platform):
    a = tenant_key(client, "acme")
    sdk = sdk_for(client, a)
    file_id = upload(client, a, classification_lines(40)).json()["id"]
    job_id = create_job(client, a, file_id)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.files.delete(file_id)
    assert job_id in str(refused.value) and "cancel the job" in str(refused.value)
    assert refused.value.code == "file_in_use"
    assert client.post(f"{JOBS}/{job_id}/cancel", headers=a).status_code == 200
    assert sdk.files.delete(file_id).deleted is True
    # the finished job keeps naming its file, as OpenAI's jobs do
    job = client.get(f"{JOBS}/{job_id}", headers=a).json()
    assert job["training_file"] == file_id and job["status"] == "cancelled"


def test_a_blob_stays_while_another_tenants_identical_file_references_it(client, platform):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    data = classification_lines()
    fa, fb = upload(client, a, data).json(), upload(client, b, data).json()
    assert fa["sha256"] == fb["sha256"]
    assert sdk_for(client, a).files.delete(fa["id"]).deleted
    assert platform.artifacts.exists(fb["sha256"])
    assert client.get(f"/v1/files/{fb['id']}/content", headers=b).content == data
    assert sdk_for(client, b).files.delete(fb["id"]).deleted
    assert blob_gone(platform, fb["sha256"])


def test_another_tenants_objects_are_404_like_missing_ones(client, platform, lora_factory):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    file_id = upload(client, a, classification_lines()).json()["id"]
    register(client, a, "support", lora_factory(8))
    register(client, a, "support", lora_factory(4))
    other = sdk_for(client, b)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):
        other.models.delete("support@v2")
    assert client.delete("/v1/adapters/support", headers=b).status_code == 404
    with pytest.raises(openai.NotFoundError):
        sdk_for(client, a).models.delete("support@v9")
    with pytest.raises(openai.NotFoundError):
        sdk_for(client, a).models.delete("nothing@v1")
    with platform.store.read() as s:
        assert s.get(DatasetFile, file_id) is not None
        assert s.scalar(select(func.count()).select_from(AdapterVersion)) == 2


# -- model versions ----------------------------------------------------------------------------


def test_model_delete_refuses_champion_rollback_target_and_alias(client, platform, lora_factory):
    a = tenant_key(client, "acme")
    sdk = sdk_for(client, a)
    register(client, a, "support", lora_factory(8))  # v1, the champion
    register(client, a, "support", lora_factory(4))  # v2
    register(client, a, "support", lora_factory(8))  # v3: the same weights as v1
    key8, key4 = version_key(platform, "support", 1), version_key(platform, "support", 2)
    assert version_key(platform, "support", 3) == key8 != key4

    with pytest.raises(openai.BadRequestError) as refused:
        sdk.models.delete("support@v1")
    assert "champion" in str(refused.value) and "promote another version first" in str(refused.value)
    assert client.post("/v1/adapters/support/promote", json={"version": 2},
                       headers=a).status_code == 200
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.models.delete("support@v1")
    assert "rollback target" in str(refused.value)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.models.delete("support")
    assert refused.value.code == "model_is_alias" and "support@vN" in str(refused.value)
    with pytest.raises(openai.BadRequestError):
        sdk.models.delete("base")

    with platform.store.read() as s:
        before = read_counter(s)
    deleted = sdk.models.delete("support@v3")
    assert (deleted.id, deleted.object, deleted.deleted) == ("support@v3", "model", True)
    with platform.store.read() as s:
        assert read_counter(s) > before, "serving caches everywhere drop the deleted version"
    assert platform.artifacts.exists(key8), "v1 still references the same weights"
    assert platform.artifacts.exists(key4)

    # a new version never reuses a deleted number (nor its engine-side name)
    assert register(client, a, "support", lora_factory(4))["version"] == 4
    assert client.post("/v1/adapters/support/promote", json={"version": 4},
                       headers=a).status_code == 200
    assert sdk.models.delete("support@v1").deleted  # champion v4, rollback target v2
    assert blob_gone(platform, key8)
    shown = client.get("/v1/adapters/support", headers=a).json()
    assert [v["version"] for v in shown["versions"]] == [2, 4]
    assert shown["champion"] == "support@v4"
    assert all(h["to_version"] != 1 and h["from_version"] != 1 for h in shown["history"])
    assert client.post("/v1/adapters/support/rollback", headers=a).json()["champion"] == \
        "support@v2"
    with pytest.raises(openai.NotFoundError):
        sdk.models.delete("support@v1")


# -- adapters ----------------------------------------------------------------------------------


def test_adapter_delete_takes_its_versions_jobs_policy_reports_and_request_log(
        client, platform, lora_factory):
    a = tenant_key(client, "acme")
    register(client, a, "support", lora_factory(8))
    register(client, a, "support", lora_factory(4))
    register(client, a, "other", lora_factory(8))  # shares v1's weights
    keys = {version_key(platform, "support", 1), version_key(platform, "support", 2)}
    assert client.put("/v1/adapters/support/policy", json={}, headers=a).status_code == 200
    file_id = upload(client, a, chat_lines(40)).json()["id"]
    job_id = create_job(client, a, file_id, suffix="support")
    r = client.delete("/v1/adapters/support", headers=a)
    assert r.status_code == 409 and job_id in r.json()["error"]["message"]
    client.post(f"{JOBS}/{job_id}/cancel", headers=a)
    with platform.store.write() as s:
        tenant = s.scalar(select(Tenant).where(Tenant.name == "acme"))
        support = s.scalar(select(Adapter).where(Adapter.name == "support"))
        s.add(MonitorReport(adapter_id=support.id, version=1))
        for name in ("support", "other"):
            s.add(RequestRecord(id=f"chatcmpl-{name}", tenant_id=tenant.id, adapter=name,
                                adapter_version=1, route="chat", status=200))
            s.add(FeedbackRecord(id=f"fb-{name}", tenant_id=tenant.id,
                                 response_id=f"chatcmpl-{name}", adapter=name, rating=1))

    r = client.delete("/v1/adapters/support", headers=a)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["id"], body["object"], body["deleted"]) == ("support", "adapter", True)
    assert body["rows"]["adapter_versions"] == 2 and body["rows"]["fine_tuning_jobs"] == 1
    with platform.store.read() as s:
        assert s.get(Adapter, support.id) is None
        assert s.scalar(select(func.count()).select_from(AdapterVersion)
                        .where(AdapterVersion.adapter_id == support.id)) == 0
        assert s.get(FineTuningJob, job_id) is None
        for model in (MonitorReport, MonitorEvent):
            assert s.scalar(select(func.count()).select_from(model)
                            .where(model.adapter_id == support.id)) == 0
        assert [r.adapter for r in s.scalars(select(RequestRecord))] == ["other"]
        assert [f.adapter for f in s.scalars(select(FeedbackRecord))] == ["other"]
        assert s.get(DatasetFile, file_id) is not None, "the user's own upload is kept"
    key8 = version_key(platform, "other", 1)
    assert platform.artifacts.exists(key8), "adapter 'other' has the same weights"
    assert all(blob_gone(platform, k) for k in keys - {key8})
    assert client.get("/v1/adapters/support", headers=a).status_code == 404
    # the name is free again
    assert register(client, a, "support", lora_factory(4))["version"] == 1


# -- tenants -----------------------------------------------------------------------------------


def _scoped_counts(session, tenant_id: int) -> dict[str, int]:
    """Rows of the tenant in every table that has a tenant_id, adapter_id or job_id."""
    adapters = list(session.scalars(select(Adapter.id).where(Adapter.tenant_id == tenant_id)))
    jobs = list(session.scalars(select(FineTuningJob.id)
                                .where(FineTuningJob.tenant_id == tenant_id)))
    counts = {"tenants": session.scalar(select(func.count()).select_from(Tenant)
                                        .where(Tenant.id == tenant_id))}
    for table in Base.metadata.sorted_tables:
        for column, values in (("tenant_id", [tenant_id]), ("adapter_id", adapters),
                               ("job_id", jobs)):
            if column in table.c:
                counts[table.name] = session.scalar(select(func.count()).select_from(table)
                                                    .where(table.c[column].in_(values)))
                break
    return counts


def _populate(client, platform, headers, name: str, lora_factory) -> dict:
    """One tenant with a row in every tenant-scoped table."""
    register(client, headers, "support", lora_factory(8))
    register(client, headers, "support", lora_factory(4))
    assert client.post("/v1/adapters/support/promote", json={"version": 2},
                       headers=headers).status_code == 200
    assert client.put("/v1/adapters/support/policy", json={}, headers=headers).status_code == 200
    shared = upload(client, headers, chat_lines(40)).json()
    own = upload(client, headers, classification_lines(12 if name == "acme" else 14)).json()
    done = create_job(client, headers, shared["id"], suffix="support")
    client.post(f"{JOBS}/{done}/cancel", headers=headers)
    queued = create_job(client, headers, shared["id"], suffix="new")  # offboarding cancels it
    deadline = time.monotonic() + 30
    while client.get(f"{JOBS}/{queued}", headers=headers).json()["status"] != "queued":
        assert time.monotonic() < deadline, "the job manager did not validate the job"
        time.sleep(0.05)
    JobWorkspace.of(platform.settings.resolved_artifacts_url, done).write_json("job.json", {})
    lineage = platform.artifacts.put_bytes(f'{{"lineage": "{name}"}}'.encode())
    with platform.store.write() as s:
        tenant = s.scalar(select(Tenant).where(Tenant.name == name))
        adapter = s.scalar(select(Adapter).where(Adapter.tenant_id == tenant.id))
        s.add(RetrainRun(id=f"rtrun-{name}", adapter_id=adapter.id, tenant_id=tenant.id,
                         status="rejected", trigger="drift", champion_version=2, job_id=done,
                         dataset_version="d" * 64, dataset={"lineage_key": lineage},
                         training_file=own["id"], validation_file=own["id"]))
        s.add(MonitorReport(adapter_id=adapter.id, version=2))
        s.add(FineTuningCheckpoint(id=f"ftckpt-{name}", job_id=done, step=1, metrics={}))
        s.add(RequestRecord(id=f"chatcmpl-{name}", tenant_id=tenant.id, adapter="support",
                            adapter_version=2, route="chat", status=200))
        s.add(FeedbackRecord(id=f"fb-{name}", tenant_id=tenant.id,
                             response_id=f"chatcmpl-{name}", rating=1))
    return {"tenant_id": tenant.id, "shared": shared["sha256"], "own": own["sha256"],
            "lineage": lineage, "done": done, "queued": queued,
            "weights": {version_key(platform, "support", 2)}}


def test_tenant_offboarding_removes_everything_of_the_tenant_and_nothing_else(
        client, platform, lora_factory):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    acme = _populate(client, platform, a, "acme", lora_factory)
    globex = _populate(client, platform, b, "globex", lora_factory)
    with platform.store.read() as s:
        before_a = _scoped_counts(s, acme["tenant_id"])
        before_b = _scoped_counts(s, globex["tenant_id"])
    assert all(before_a.values()), f"every tenant-scoped table has rows: {before_a}"

    assert client.delete("/admin/tenants/acme", headers=a).status_code == 403
    r = client.delete("/admin/tenants/acme", headers=ADMIN_HEADERS)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["object"] == "tenant"
    with platform.store.read() as s:
        after_a = _scoped_counts(s, acme["tenant_id"])
        assert _scoped_counts(s, globex["tenant_id"]) == before_b
    assert set(after_a) == set(before_a) and not any(after_a.values()), after_a
    assert blob_gone(platform, acme["own"]) and blob_gone(platform, acme["lineage"])
    assert platform.artifacts.exists(acme["shared"]), "globex uploaded the same file"
    # both tenants registered the same weights: still referenced by globex
    assert all(platform.artifacts.exists(k) for k in acme["weights"])
    assert not JobWorkspace.of(platform.settings.resolved_artifacts_url, acme["done"]).read_json(
        "job.json")
    assert JobWorkspace.of(platform.settings.resolved_artifacts_url, globex["done"]).read_json(
        "job.json") == {}
    assert client.get("/v1/adapters", headers=a).status_code == 401
    assert client.get("/v1/adapters", headers=b).status_code == 200
    names = [t["name"] for t in client.get("/admin/tenants", headers=ADMIN_HEADERS).json()["data"]]
    assert names == ["globex"]
    assert client.delete("/admin/tenants/acme", headers=ADMIN_HEADERS).status_code == 404

    # the last reference goes with globex
    assert client.delete("/admin/tenants/globex", headers=ADMIN_HEADERS).status_code == 200
    assert blob_gone(platform, acme["shared"])
    assert all(blob_gone(platform, k) for k in acme["weights"])
