"""The CLI over HTTP (``--url`` / ``TUNELOOP_URL``) against the real app under uvicorn: what an
admin and a tenant see, and the exit codes of what fails. Jobs never run (concurrency 0); the
tests move them in the store."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import struct
import threading
import time

import pytest
from typer.testing import CliRunner

from services.store.models import FineTuningJob
from tests.support.api import classification_lines
from training.jobs import store
from training.jobs.states import EventType
from tuneloop.cli.main import app

ADMIN_KEY = "admin-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(app_):  # noqa: ANN001
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app_, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="cli-remote-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # warm-up: the tokenizer
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def server_url(platform):
    from tuneloop.app import create_app

    with _serve(create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 0.05})) as url:
        yield url


@pytest.fixture
def cli(server_url, tmp_path, monkeypatch):
    """cli(*args, key=...) runs ``tuneloop ARGS`` with TUNELOOP_URL set to the server and
    TUNELOOP_API_KEY to ``key``; the store settings point nowhere (HTTP mode never opens it)."""
    monkeypatch.setenv("TUNELOOP_URL", server_url)
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "never-created"))
    monkeypatch.delenv("TUNELOOP_API_KEY", raising=False)

    def run(*args: str, key: str | None = None, input: str | None = None):  # noqa: A002
        env = {"TUNELOOP_API_KEY": key} if key else {}
        return CliRunner().invoke(app, list(args), env=env, input=input)

    yield run
    assert not (tmp_path / "never-created").exists()


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def failed(result, code: int, lines: int = 1) -> str:
    """The error a failed command printed: ``error: <the API's message>`` on stderr, in one
    line unless the message has more (a dataset's problems, one a line); never a traceback."""
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and "Traceback" not in result.output, result.output
    assert len(result.stderr.strip().splitlines()) == lines, result.stderr
    return result.stderr.strip()


@pytest.fixture
def tiny_adapter(tmp_path, base_model_dir):
    """A rank-2 LoRA on one projection of the base, written without torch (registration reads
    only the safetensors header), next to a file registration does not keep."""
    from services.adapter_validation import base_weight_shapes

    module = "model.layers.0.self_attn.q_proj"
    out_dim, in_dim = base_weight_shapes(base_model_dir)[f"{module}.weight"]
    header, offset = {}, 0
    for kind, shape in (("A", [2, in_dim]), ("B", [out_dim, 2])):
        size = 4 * math.prod(shape)
        header[f"base_model.model.{module}.lora_{kind}.weight"] = {
            "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    directory = tmp_path / "tiny-adapter"
    directory.mkdir()
    (directory / "adapter_model.safetensors").write_bytes(
        struct.pack("<Q", len(raw)) + raw + bytes(offset))
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"],
         "task_type": "CAUSAL_LM"}))
    (directory / "notes.txt").write_text("not part of an adapter")
    return directory


@pytest.fixture
def acme_key(cli) -> str:
    ok(cli("tenants", "create", "acme", key=ADMIN_KEY))
    return json.loads(ok(cli("keys", "create", "acme", "--json", key=ADMIN_KEY)).stdout)["key"]


def test_admin_makes_a_tenant_and_the_tenant_works_with_its_key(cli, tmp_path, tiny_adapter):
    created = json.loads(ok(cli("tenants", "create", "acme", "--json", key=ADMIN_KEY)).stdout)
    assert created["name"] == "acme" and created["state"] == "active"
    ok(cli("tenants", "create", "globex", key=ADMIN_KEY))
    listed = ok(cli("tenants", "list", key=ADMIN_KEY)).stdout.splitlines()
    assert [line.split("\t")[:2] for line in listed] == [["acme", "active"], ["globex", "active"]]
    key = json.loads(ok(cli("keys", "create", "acme", "--json", key=ADMIN_KEY)).stdout)
    assert key["tenant"] == "acme" and key["key"].startswith(key["prefix"])
    assert ok(cli("keys", "list", "acme", key=ADMIN_KEY)).stdout.strip() == (
        f"{key['id']}\t{key['prefix']}...\tactive")
    globex_key = ok(cli("keys", "create", "globex", key=ADMIN_KEY)).stdout.strip()
    acme = key["key"]

    data = tmp_path / "train.jsonl"
    data.write_bytes(classification_lines(16))
    line = ok(cli("files", "upload", str(data), key=acme)).stdout.strip()
    file_id, task, summary = line.split("\t")
    assert file_id.startswith("file-") and task == "classification"
    assert summary.startswith("16 examples") and "labels" in summary
    listed = json.loads(ok(cli("files", "list", "--json", key=acme)).stdout)
    assert [f["id"] for f in listed] == [file_id] and listed[0]["filename"] == "train.jsonl"
    assert ok(cli("files", "list", key=globex_key)).stdout == ""

    r = ok(cli("adapters", "register", "bot", str(tiny_adapter), key=acme))
    assert r.stdout.startswith("registered bot@v1 (rank 2, ")
    ok(cli("adapters", "register", "bot", str(tiny_adapter), key=acme))
    ok(cli("adapters", "register", "secret", str(tiny_adapter), key=globex_key))
    assert ok(cli("adapters", "list", key=acme)).stdout.strip() == (
        "bot\tchat\tchampion v1\tlatest v2")
    assert [a["name"] for a in json.loads(ok(cli("adapters", "list", "--json", key=acme)).stdout)
            ] == ["bot"]
    assert "bot@v2 is now the champion" in ok(cli("adapters", "promote", "bot", "2", key=acme)
                                              ).stdout
    assert ok(cli("adapters", "rollback", "bot", key=acme)).stdout.strip() == (
        "rolled back: bot@v1 is the champion of bot")
    assert json.loads(ok(cli("adapters", "show", "bot", key=acme)).stdout)["champion"] == "bot@v1"

    r = ok(cli("jobs", "create", "-f", file_id, "--model", "base", "--suffix", "cli",
               "--hp", "n_epochs=2", "--detach", key=acme))
    job_id = r.stdout.strip()
    assert job_id.startswith("ftjob-") and "created" in r.stderr
    assert ok(cli("jobs", "list", key=acme)).stdout.startswith(f"{job_id}\t")
    assert ok(cli("jobs", "list", key=globex_key)).stdout == ""
    shown = json.loads(ok(cli("jobs", "show", job_id, key=acme)).stdout)
    assert shown["suffix"] == "cli" and shown["hyperparameters"]["n_epochs"] == 2
    assert "\tcreated\t" in ok(cli("jobs", "events", job_id, key=acme)).stdout
    assert ok(cli("jobs", "cancel", job_id, key=acme)).stdout.strip() == f"{job_id}: cancelled"
    r = cli("jobs", "wait", job_id, "--poll-s", "0.05", key=acme)
    assert r.exit_code == 1 and "cancelled" in r.output


def test_jobs_create_uploads_a_path_and_wait_follows_the_job_to_its_end(
        cli, acme_key, platform, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes(classification_lines(16))
    r = ok(cli("jobs", "create", "-f", str(data), "--model", "base", "--suffix", "cli",
               "--detach", "--json", key=acme_key))
    assert "uploaded" in r.stderr
    job_id = json.loads(r.stdout)["id"]
    _wait_for_status(platform, job_id, "queued")  # validated by the server's job manager

    def train_and_succeed() -> None:
        _update(platform, job_id, status="running", progress={"step": 1, "total_steps": 4})
        time.sleep(0.3)
        _update(platform, job_id, status="succeeded", fine_tuned_model="cli@v1",
                progress={"step": 4, "total_steps": 4, "loss": 0.25, "tokens_per_s": 900.0},
                event=(EventType.PUBLISHED, "published cli@v1"))

    worker = threading.Thread(target=train_and_succeed)
    worker.start()
    r = cli("jobs", "wait", job_id, "--poll-s", "0.05", key=acme_key)
    worker.join()
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "cli@v1"
    assert "published cli@v1" in r.stderr and "4/4" in r.stderr and "loss 0.2500" in r.stderr
    assert "succeeded" in r.stderr


def test_wait_on_a_failed_job_exits_1_with_its_error(cli, acme_key, platform, tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_bytes(classification_lines(16))
    file_id = ok(cli("files", "upload", str(data), key=acme_key)).stdout.split()[0]
    job_id = ok(cli("jobs", "create", "-f", file_id, "--model", "base", "--detach",
                    key=acme_key)).stdout.strip()
    _wait_for_status(platform, job_id, "queued")
    _update(platform, job_id, status="failed",
            error={"code": "training_failed", "message": "loss is NaN; lower the learning rate"})
    r = cli("jobs", "wait", job_id, "--poll-s", "0.05", key=acme_key)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == "error: loss is NaN; lower the learning rate"


def test_failures_have_their_exit_code_and_one_line(cli, acme_key, tmp_path):
    line = failed(cli("adapters", "list", key="tl-not-a-real-key"), 3)
    assert "key" in line
    assert "admin key" in failed(cli("tenants", "list", key=acme_key), 3)
    assert "TUNELOOP_API_KEY" in failed(cli("files", "list"), 3)
    assert "nope" in failed(cli("adapters", "show", "nope", key=acme_key), 4)
    assert "nope" in failed(cli("adapters", "delete", "nope", "--yes", key=acme_key), 4)
    failed(cli("jobs", "wait", "ftjob-nope", key=acme_key), 4)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "a"}\n{oops\n')
    assert "line 2: invalid JSON" in failed(cli("files", "upload", str(bad), key=acme_key), 5, 3)
    assert "already exists" in failed(cli("tenants", "create", "acme", key=ADMIN_KEY), 5)
    assert "--model" in failed(cli("jobs", "create", "-f", "file-x", key=acme_key), 2)
    (tmp_path / "empty").mkdir()
    assert "adapter_config.json" in failed(cli("adapters", "register", "bot",
                                               str(tmp_path / "empty"), key=acme_key), 5)

    closed = f"http://127.0.0.1:{_free_port()}"
    line = failed(cli("files", "list", "--url", closed, key=acme_key), 6)
    assert f"cannot reach tuneloop at {closed}" in line
    assert "not an http(s) URL" in failed(cli("files", "list", "--url", "localhost:1",
                                              key=acme_key), 2)


def test_deletes_revocation_and_disabling_over_http(cli, acme_key, tiny_adapter):
    for _ in range(3):
        ok(cli("adapters", "register", "bot", str(tiny_adapter), key=acme_key))
    assert "champion" in failed(cli("adapters", "delete", "bot", "--version", "1",
                                    key=acme_key), 5)
    assert ok(cli("adapters", "delete", "bot", "--version", "3", key=acme_key)
              ).stdout.strip() == "deleted bot@v3"

    ok(cli("tenants", "disable", "acme", key=ADMIN_KEY))
    failed(cli("adapters", "list", key=acme_key), 3)
    ok(cli("tenants", "enable", "acme", key=ADMIN_KEY))
    ok(cli("adapters", "list", key=acme_key))
    key_id = json.loads(ok(cli("keys", "list", "acme", "--json", key=ADMIN_KEY)).stdout)[0]["id"]
    assert cli("keys", "revoke", str(key_id), key=ADMIN_KEY).exit_code == 2  # needs --tenant
    ok(cli("keys", "revoke", str(key_id), "-t", "acme", key=ADMIN_KEY))
    failed(cli("adapters", "list", key=acme_key), 3)
    assert "\trevoked " in ok(cli("keys", "list", "acme", key=ADMIN_KEY)).stdout

    r = ok(cli("tenants", "delete", "acme", "--yes", key=ADMIN_KEY))
    assert r.stdout.startswith("deleted tenant acme (") and "adapter_versions" in r.stdout
    assert ok(cli("tenants", "list", key=ADMIN_KEY)).stdout == ""


def test_direct_mode_still_needs_a_tenant(monkeypatch):
    monkeypatch.delenv("TUNELOOP_URL", raising=False)
    r = CliRunner().invoke(app, ["adapters", "list"])
    assert r.exit_code == 2 and "--tenant" in r.output


def test_help_documents_the_http_options_and_exit_codes():
    r = ok(CliRunner().invoke(app, ["jobs", "--help"]))
    assert "Exit codes" in r.output and "unauthorized" in r.output
    r = ok(CliRunner().invoke(app, ["files", "upload", "--help"]))
    assert "--url" in r.output and "TUNELOOP_URL" in r.output and "TUNELOOP_API_KEY" in r.output


def _update(platform, job_id: str, *, event: tuple[EventType, str] | None = None, **values):
    with platform.store.write() as session:
        job = session.get(FineTuningJob, job_id)
        for name, value in values.items():
            setattr(job, name, value)
        if event is not None:
            store.add_event(session, job_id, *event)


def _wait_for_status(platform, job_id: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        with platform.store.read() as session:
            if session.get(FineTuningJob, job_id).status == status:
                return
        assert time.monotonic() < deadline, f"{job_id} did not become {status}"
        time.sleep(0.05)


def test_jobs_wait_over_http_rides_out_a_gateway_restart(monkeypatch):
    """Once the job was seen, 5xx / unreachable polls are retried (a rolling restart), while a
    first poll that fails, or a 404, fails at once."""
    from tuneloop.cli import jobs
    from tuneloop.cli.remote import ApiError, ExitCode

    class FlakyApi:
        def __init__(self, failures):
            self.failures = list(failures)

        def get(self, path, **params):
            if self.failures:
                failure = self.failures.pop(0)
                if failure is not None:
                    raise ApiError("tuneloop is restarting", failure)
            return {"data": []} if path.endswith("/events") else {"id": "ftjob-1"}

    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    poll = jobs._http_poll(FlakyApi([None, None, ExitCode.UNAVAILABLE, ExitCode.UNAVAILABLE]),
                           "ftjob-1")
    assert poll()[0]["id"] == "ftjob-1"  # seen once
    assert poll()[0]["id"] == "ftjob-1"  # two 503s later, still following
    first = jobs._http_poll(FlakyApi([ExitCode.UNAVAILABLE]), "ftjob-1")
    with pytest.raises(ApiError):
        first()
    gone = jobs._http_poll(FlakyApi([None, None, ExitCode.NOT_FOUND]), "ftjob-1")
    gone()
    with pytest.raises(ApiError) as info:
        gone()
    assert info.value.exit_code == ExitCode.NOT_FOUND
    short = jobs._http_poll(FlakyApi([None, None] + [ExitCode.UNAVAILABLE] * 50), "ftjob-1",
                            outage_s=0.0)
    short()
    with pytest.raises(ApiError):  # past the outage bound: exit code 6 after all
        short()
