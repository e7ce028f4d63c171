"""Files API over HTTP on SQLite and PostgreSQL: validation with line numbers, limits, tenancy."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from services.platform import Platform
from tests.support.api import classification_lines, tenant_key, upload
from tuneloop.app import create_app


@pytest.fixture
def platform(make_settings, database_url):
    """``api_platform`` with a 4 KiB upload limit (the limit tests need a small one)."""
    p = Platform.open(make_settings(database_url=database_url, max_upload_bytes=4096))
    yield p
    p.close()


@pytest.fixture
def client(platform):
    app = create_app(platform=platform, jobs={"concurrency": 0})
    with TestClient(app) as c:
        yield c


def test_upload_classification_jsonl_and_read_back(client):
    a = tenant_key(client, "acme")
    data = classification_lines()
    r = upload(client, a, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert body["bytes"] == len(data) and body["filename"] == "data.jsonl"
    assert body["purpose"] == "fine-tune" and body["status"] == "processed"
    assert isinstance(body["created_at"], int)
    assert body["task"] == "classification" and body["format"] == "jsonl"
    assert body["stats"]["examples"] == 12
    assert body["stats"]["label_counts"] == {"neg": 6, "pos": 6}
    assert body["stats"]["tokens"] > 12 * 10
    import hashlib

    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get(f"/v1/files/{body['id']}", headers=a).json() == body
    listed = client.get("/v1/files", headers=a).json()
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [body["id"]]
    assert client.get(f"/v1/files/{body['id']}/content", headers=a).content == data


def test_csv_and_chat_formats_are_detected(client):
    a = tenant_key(client, "acme")
    csv_data = b"text,label\n\"hello, world\",greeting\nbye now,farewell\nsee you,farewell\n"
    r = upload(client, a, csv_data, "data.csv")
    assert r.status_code == 200, r.text
    assert (r.json()["task"], r.json()["format"]) == ("classification", "csv")
    chat = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                             {"role": "assistant", "content": f"a{i}"}]}
                               ).encode() + b"\n" for i in range(3))
    r = upload(client, a, chat, "chat.jsonl")
    assert r.status_code == 200, r.text
    assert r.json()["task"] == "chat" and r.json()["stats"]["examples"] == 3


def test_every_problem_is_reported_with_its_line_number(client):
    a = tenant_key(client, "acme")
    bad = (b'{"text": "good one", "label": "pos"}\n'
           b'this is not json\n'
           b'{"text": "", "label": "neg"}\n'
           b'{"text": "good one", "label": "neg"}\n'  # a warning, not a problem
           b'{"text": "fine", "label": "neg"}\n'
           b'{"label": "neg"}\n')
    r = upload(client, a, bad)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_dataset"
    message = error["message"]
    for expected in ("line 2: invalid JSON", "line 3: empty text",
                     "line 6: missing field(s): text"):
        assert expected in message, message
    assert "3 problem(s)" in message and "line 4" not in message
    assert client.get("/v1/files", headers=a).json()["data"] == []  # nothing stored

    chat = (b'{"messages": [{"role": "user", "content": "hi"}]}\n'
            b'{"messages": [{"role": "robot", "content": "hi"}, '
            b'{"role": "assistant", "content": "yo"}]}\n'
            b'{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    message = upload(client, a, chat).json()["error"]["message"]
    assert "line 1: no assistant message" in message
    assert "line 2: messages[0] has unknown role 'robot'" in message
    assert 'line 3: messages[0] has no "role"' in message

    one_label = b"".join(json.dumps({"text": f"t{i}", "label": "x"}).encode() + b"\n"
                         for i in range(3))
    assert "only one label" in upload(client, a, one_label).json()["error"]["message"]


def test_duplicates_are_accepted_with_warnings_in_the_stats(client, platform):
    a = tenant_key(client, "acme")
    data = classification_lines(4) + (b'{"text": "example text number 1", "label": "pos"}\n'
                                      b'{"text": "example text number 2", "label": "pos"}\n')
    r = upload(client, a, data)
    assert r.status_code == 200, r.text
    stats = r.json()["stats"]
    assert (stats["examples"], stats["duplicates"], stats["conflicting_labels"]) == (4, 1, 1)
    assert stats["label_counts"] == {"neg": 2, "pos": 2}
    assert stats["warnings"] == [
        {"line": 5, "message": "duplicate of line 2; dropped, trained once"},
        {"line": 6, "message": "same text as line 3 with a different label ('pos' vs 'neg'); "
                               "dropped, line 3's label kept"}]
    assert client.get(f"/v1/files/{r.json()['id']}", headers=a).json()["stats"] == stats

    platform.settings.dataset_strict = True  # TUNELOOP_DATASET_STRICT
    r = upload(client, a, data)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "1 problem(s)" in message and "line 6: duplicate text of line 3" in message


def test_too_long_example_is_reported(client, platform):
    a = tenant_key(client, "acme")
    platform.settings.max_model_len = 64
    long_text = " ".join(["word"] * 80)
    data = (json.dumps({"text": "short", "label": "a"}) + "\n"
            + json.dumps({"text": long_text, "label": "b"}) + "\n").encode()
    message = upload(client, a, data).json()["error"]["message"]
    assert "line 2:" in message and "over the maximum of 64" in message


def test_limits_and_bad_requests(client):
    a = tenant_key(client, "acme")
    r = upload(client, a, classification_lines(200))  # over max_upload_bytes=4096
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    r = upload(client, a, classification_lines(), purpose="assistants")
    assert r.status_code == 400 and "fine-tune" in r.json()["error"]["message"]
    assert client.post("/v1/files", headers=a, data={"purpose": "fine-tune"}).status_code == 400
    assert client.get("/v1/files").status_code == 401
    r = client.get("/v1/files/file-doesnotexist", headers=a)
    assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"


def test_files_are_tenant_scoped(client):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    file_id = upload(client, a, classification_lines()).json()["id"]
    assert client.get(f"/v1/files/{file_id}", headers=b).status_code == 404
    assert client.get(f"/v1/files/{file_id}/content", headers=b).status_code == 404
    assert client.get("/v1/files", headers=b).json()["data"] == []


def test_official_openai_client_uploads_and_sees_errors(client, tmp_path):
    import openai

    a = tenant_key(client, "acme")
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    path = tmp_path / "train.jsonl"
    path.write_bytes(classification_lines())
    with open(path, "rb") as fh:
        created = sdk.files.create(file=fh, purpose="fine-tune")
    assert created.id.startswith("file-") and created.status == "processed"
    assert sdk.files.retrieve(created.id).bytes == path.stat().st_size
    assert [f.id for f in sdk.files.list()] == [created.id]
    assert sdk.files.content(created.id).read() == path.read_bytes()
    path.write_bytes(classification_lines() + classification_lines(1))  # line 13 repeats line 1
    with open(path, "rb") as fh:
        stats = sdk.files.create(file=fh, purpose="fine-tune").model_extra["stats"]
    assert stats["duplicates"] == 1 and stats["warnings"][0]["line"] == 13
    path.write_bytes(b'{"text": "x", "label": "a"}\nnope\n')
    with open(path, "rb") as fh, pytest.raises(openai.BadRequestError) as err:
        sdk.files.create(file=fh, purpose="fine-tune")
    assert "line 2: invalid JSON" in str(err.value)


def test_a_download_is_streamed_and_a_corrupt_blob_is_refused_before_any_byte(client, platform):
    a = tenant_key(client, "acme")
    data = classification_lines()
    file = upload(client, a, data).json()
    r = client.get(f"/v1/files/{file['id']}/content", headers=a)
    assert r.headers["content-length"] == str(len(data)) and r.content == data
    store = platform.artifacts
    with store.fs.open(store._path(file["sha256"]), "wb") as fh:
        fh.write(data.replace(b"pos", b"neg"))  # same size, other content: bit rot
    r = client.get(f"/v1/files/{file['id']}/content", headers=a)
    assert r.status_code == 500 and r.json()["error"]["code"] == "artifact_corrupt"
    assert "does not match its hash" in r.json()["error"]["message"]
