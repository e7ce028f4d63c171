"""Export over HTTP on SQLite and PostgreSQL: a version's PEFT directory as .tar.gz (registered
again elsewhere it is the same content), tenancy, and a monitor-compiled dataset's bytes."""

from __future__ import annotations

import io
import tarfile

import openai
import pytest

from services.adapter_validation import ADAPTER_FILES, WEIGHTS_FILE
from services.store.models import AdapterVersion
from services.tenants import get_tenant
from tests.support.api import chat_lines, tenant_key
from tests.support.archives import tar_dir
from training.jobs.files import store_file


@pytest.fixture
def client(api_client):
    return api_client


def _register(client, headers, name, archive: bytes):  # noqa: ANN001
    r = client.post(f"/v1/adapters/{name}/versions", headers=headers,
                    files={"file": ("adapter.tar.gz", archive, "application/gzip")})
    assert r.status_code == 201, r.text
    return r.json()


def _artifact_key(platform, version_id: int) -> str:  # noqa: ANN001
    with platform.store.read() as s:
        return s.get_one(AdapterVersion, version_id).artifact_key


def _version_ids(platform) -> list[int]:  # noqa: ANN001
    with platform.store.read() as s:
        return sorted(v.id for v in s.query(AdapterVersion))


def test_export_then_register_elsewhere_is_the_same_content(client, platform, peft_adapter):
    acme, globex = tenant_key(client, "acme"), tenant_key(client, "globex")
    _register(client, acme, "support", tar_dir(peft_adapter))
    r = client.get("/v1/adapters/support/versions/1/content", headers=acme)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert r.headers["content-disposition"] == 'attachment; filename="support-v1.tar.gz"'
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        assert tar.getnames() == list(ADAPTER_FILES)  # only what registration keeps, at the root
        weights = tar.extractfile(WEIGHTS_FILE)
        assert weights is not None and weights.read() == (peft_adapter / WEIGHTS_FILE).read_bytes()
    # the round trip: the archive registers as is, under another tenant and another name
    again = _register(client, globex, "imported", r.content)
    assert again["id"] == "imported@v1" and again["rank"] == 4
    first, second = _version_ids(platform)
    # same files, same key: the engine loads the very same adapter and serves the same replies
    assert _artifact_key(platform, first) == _artifact_key(platform, second)
    exported_again = client.get("/v1/adapters/imported/versions/1/content", headers=globex)
    assert exported_again.content == r.content  # deterministic archive


def test_another_tenants_version_is_404_like_a_missing_one(client, peft_adapter):
    acme, globex = tenant_key(client, "acme"), tenant_key(client, "globex")
    archive = tar_dir(peft_adapter)
    _register(client, acme, "support", archive)
    _register(client, acme, "support", archive)
    _register(client, globex, "other", archive)
    for path in ("/v1/adapters/support/versions/1/content", "/v1/adapters/nothing/versions/1/content"):
        r = client.get(path, headers=globex)
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    r = client.get("/v1/adapters/support/versions/3/content", headers=acme)
    assert r.status_code == 404 and "no version 3" in r.json()["error"]["message"]
    assert client.get("/v1/adapters/other/versions/2/content", headers=globex).status_code == 404
    assert client.get("/v1/adapters/support/versions/1/content").status_code == 401


def test_a_compiled_dataset_downloads_with_the_official_client(client, platform):
    a = tenant_key(client, "acme")
    data = chat_lines(6)
    with platform.store.read() as s:
        tenant = get_tenant(s, "acme")
        s.expunge(tenant)
    # stored the way the monitor stores a dataset it compiled (monitoring/retrain.py)
    row = store_file(platform, tenant, data, "retrain-support.jsonl", task="chat")
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    assert sdk.files.content(row.id).read() == data
    globex = tenant_key(client, "globex")
    assert client.get(f"/v1/files/{row.id}/content", headers=globex).status_code == 404
