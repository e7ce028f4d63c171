"""Fine-tuning jobs API on SQLite and PostgreSQL, without training: creation checks, the OpenAI
shape, validation, cancel, tenancy, restart recovery of jobs left ``running``, and the result
file of a scripted run."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from services.store.models import FineTuningJob
from tests.support.api import classification_lines, tenant_key, upload
from tuneloop.app import create_app

JOBS = "/v1/fine_tuning/jobs"


def make_client(platform, **options):
    app = create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 0.05, **options})
    # A manager that validates jobs but runs none: nothing here starts Ray.
    return TestClient(app)


@pytest.fixture
def client(platform):
    with make_client(platform) as c:
        yield c


def wait_status(client, headers, job_id, statuses, timeout_s=30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"{JOBS}/{job_id}", headers=headers).json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


def test_create_job_in_the_openai_shape_and_validate_it(client):
    import openai

    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines(40)).json()["id"]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    job = sdk.fine_tuning.jobs.create(
        model="base", training_file=file_id, suffix="sentiment",
        hyperparameters={"n_epochs": 2, "batch_size": "auto"},
        extra_body={"task": "classification", "auto_promote": True,
                    "hyperparameters": {"n_epochs": 2, "lora_r": 4, "max_steps": 3}})
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert job.status == "validating_files" and job.model == "base"
    assert job.training_file == file_id and job.fine_tuned_model is None
    hp = job.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (2, 8, 1.0)
    raw = client.get(f"{JOBS}/{job.id}", headers=a).json()
    assert raw["hyperparameters"]["lora_r"] == 4 and raw["suffix"] == "sentiment"
    assert raw["labels"] == ["neg", "pos"] and raw["task"] == "classification"
    assert raw["auto_promote"] is True and raw["organization_id"] == "acme"
    assert "{text}" in raw["prompt_template"]

    done = wait_status(client, a, job.id, {"queued"})
    assert done["status"] == "queued"
    events = sdk.fine_tuning.jobs.list_events(job.id).data
    assert [e.type for e in events] == ["validated", "created"]  # newest first
    assert "40 examples" in events[0].message
    assert [j.id for j in sdk.fine_tuning.jobs.list()] == [job.id]
    assert list(sdk.fine_tuning.jobs.checkpoints.list(job.id)) == []


def test_creation_errors_name_the_field(client):
    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    cls_file = upload(client, a, classification_lines()).json()["id"]
    other = upload(client, b, classification_lines()).json()["id"]
    chat = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                             {"role": "assistant", "content": f"a{i}"}]}
                               ).encode() + b"\n" for i in range(4))
    chat_file = upload(client, a, chat).json()["id"]

    def create(**body):
        return client.post(JOBS, headers=a, json={"model": "base", **body})

    cases = [
        (create(training_file="file-nope"), "training_file", "invalid_training_file"),
        (create(training_file=other), "training_file", "invalid_training_file"),
        (create(training_file=cls_file, validation_file="file-x"), "validation_file", None),
        (create(training_file=cls_file, model="no-such-adapter"), "model", "model_not_found"),
        (create(training_file=chat_file, task="classification"), "training_file", None),
        (create(training_file=cls_file, hyperparameters={"n_epoch": 2}), "hyperparameters", None),
        (create(training_file=cls_file, hyperparameters={"n_epochs": -1}),
         "hyperparameters.n_epochs", None),
        (create(training_file=cls_file, hyperparameters={"lora_dropout": 1.5}),
         "hyperparameters.lora_dropout", None),
        (create(training_file=cls_file, suffix="bad name!"), "name", None),
        (create(training_file=cls_file, labels=["pos", "other"]), "labels", None),
        (create(training_file=cls_file, prompt_template="no slot"), "prompt_template", None),
    ]
    for r, param, code in cases:
        assert r.status_code == 400, (param, r.text)
        error = r.json()["error"]
        assert error["param"] == param, error
        if code:
            assert error["code"] == code
    assert client.post(JOBS, headers=a, json={"training_file": cls_file}).status_code == 400
    assert client.get(JOBS, headers=a).json()["data"] == []


@pytest.mark.parametrize("hyperparameters", [
    b'{"learning_rate_multiplier": NaN}', b'{"learning_rate_multiplier": Infinity}',
    b'{"weight_decay": NaN}'])
def test_non_finite_hyperparameters_are_refused(client, hyperparameters):
    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines()).json()["id"]
    body = b'{"model": "base", "training_file": "%s", "hyperparameters": %s}' % (
        file_id.encode(), hyperparameters)
    r = client.post(JOBS, headers={**a, "Content-Type": "application/json"}, content=body)
    assert r.status_code == 400, r.text
    assert "finite number" in r.json()["error"]["message"]
    assert client.get(JOBS, headers=a).json()["data"] == []


def test_qlora_on_a_cpu_only_tuneloop_is_refused_with_the_reason(client):
    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines()).json()["id"]
    r = client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id,
                                           "hyperparameters": {"qlora": True}})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "hyperparameters.qlora" and error["code"] == "qlora_needs_gpu"
    assert "needs a GPU" in error["message"] and "TUNELOOP_TRAIN_USE_GPU" in error["message"]
    r = client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id,
                                           "hyperparameters": {"qlora": "yes"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "hyperparameters.qlora"
    assert client.get(JOBS, headers=a).json()["data"] == []


def test_chat_job_defaults(client):
    a = tenant_key(client, "acme")
    chat = b"".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                             {"role": "assistant", "content": f"a{i}"}]}
                               ).encode() + b"\n" for i in range(4))
    file_id = upload(client, a, chat).json()["id"]
    job = client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id,
                                             "seed": 7}).json()
    assert job["task"] == "chat" and job["labels"] is None and job["seed"] == 7
    assert job["suffix"].startswith("ft-")
    assert job["hyperparameters"] == {"n_epochs": 3, "batch_size": 1,
                                      "learning_rate_multiplier": 1.0}


def test_job_level_validation_fails_with_line_numbers(client):
    a = tenant_key(client, "acme")
    train = upload(client, a, classification_lines()).json()["id"]
    valid_data = (b'{"text": "held out one", "label": "neg"}\n'
                  b'{"text": "held out two", "label": "maybe"}\n')
    valid = upload(client, a, valid_data, "valid.jsonl").json()["id"]
    job = client.post(JOBS, headers=a, json={"model": "base", "training_file": train,
                                             "validation_file": valid}).json()
    done = wait_status(client, a, job["id"], {"failed"})
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_training_file"
    assert "line 2: unknown label 'maybe'" in done["error"]["message"]
    assert done["finished_at"] is not None
    events = client.get(f"{JOBS}/{job['id']}/events", headers=a).json()["data"]
    assert events[0]["type"] == "failed" and events[0]["level"] == "error"


def test_cancel_a_queued_job_and_tenant_isolation(client):
    import openai

    a, b = tenant_key(client, "acme"), tenant_key(client, "globex")
    file_id = upload(client, a, classification_lines()).json()["id"]
    job = client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id}).json()
    assert wait_status(client, a, job["id"], {"queued"})["status"] == "queued"
    for path in ("", "/events", "/checkpoints"):
        r = client.get(f"{JOBS}/{job['id']}{path}", headers=b)
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found"
    assert client.post(f"{JOBS}/{job['id']}/cancel", headers=b).status_code == 404
    assert client.get(JOBS, headers=b).json()["data"] == []
    assert client.get(f"{JOBS}/ftjob-missing", headers=a).status_code == 404

    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    cancelled = sdk.fine_tuning.jobs.cancel(job["id"])
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError, match="already cancelled"):  # not retried
        sdk.fine_tuning.jobs.cancel(job["id"])
    events = [e.type for e in sdk.fine_tuning.jobs.list_events(job["id"])]
    assert events[0] == "cancelled"


def test_list_pagination(client):
    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines()).json()["id"]
    ids = [client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id}
                       ).json()["id"] for _ in range(3)]
    page = client.get(JOBS, headers=a, params={"limit": 2}).json()
    assert [j["id"] for j in page["data"]] == ids[::-1][:2] and page["has_more"] is True
    rest = client.get(JOBS, headers=a, params={"limit": 2, "after": ids[1]}).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False


def _queued_job(platform) -> tuple[dict, str]:
    """A tenant's classification job, created through the API and waiting in the queue."""
    with make_client(platform) as client:
        a = tenant_key(client, "acme")
        file_id = upload(client, a, classification_lines()).json()["id"]
        job = client.post(JOBS, headers=a, json={"model": "base", "training_file": file_id}
                          ).json()["id"]
        wait_status(client, a, job, {"queued"})
    return a, job


def _force_running(platform, job_id, owner, heartbeat_age_s):
    with platform.store.write() as session:
        row = session.get(FineTuningJob, job_id)
        row.status = "running"
        row.owner = owner
        row.heartbeat_at = datetime.now(UTC) - timedelta(seconds=heartbeat_age_s)


def _add_checkpoint(platform, job_id, step):
    from training.jobs import store

    with platform.store.write() as session:
        store.add_checkpoint(session, job_id, step, {"step": step, "train_loss": 1.0})


def test_restart_requeues_jobs_left_running_and_keeps_live_ones(platform):
    with make_client(platform) as client:
        a = tenant_key(client, "acme")
        file_id = upload(client, a, classification_lines()).json()["id"]
        stale, fresh, live = (client.post(JOBS, headers=a, json={
            "model": "base", "training_file": file_id}).json()["id"] for _ in range(3))
        wait_status(client, a, live, {"queued"})
    # Processes that died on another host long ago; and one that is alive and heartbeating.
    _force_running(platform, stale, "gone-host:4242:abcd", heartbeat_age_s=3600)
    _add_checkpoint(platform, stale, 6)
    _force_running(platform, fresh, "gone-host:4242:abcd", heartbeat_age_s=3600)
    _force_running(platform, live, "other-host:1:live", heartbeat_age_s=0)
    with make_client(platform) as client:  # "restart": a new app, a new job manager
        job = client.get(f"{JOBS}/{stale}", headers=a).json()
        assert job["status"] == "queued" and job["error"] is None
        event = client.get(f"{JOBS}/{stale}/events", headers=a).json()["data"][0]
        assert event["type"] == "queued"
        assert "resumes from its latest checkpoint (step 6 or later)" in event["message"]
        assert event["data"] == {"restart": 1, "resume_step": 6}
        assert client.get(f"{JOBS}/{fresh}", headers=a).json()["status"] == "queued"
        event = client.get(f"{JOBS}/{fresh}/events", headers=a).json()["data"][0]
        assert "no checkpoint yet, so it starts again from the beginning" in event["message"]
        assert client.get(f"{JOBS}/{live}", headers=a).json()["status"] == "running"


def test_restart_gives_up_on_a_job_that_keeps_taking_tuneloop_down(platform):
    from training.jobs.manager import MAX_AUTOMATIC_RESTARTS

    a, job = _queued_job(platform)
    for attempt in range(MAX_AUTOMATIC_RESTARTS + 1):
        _force_running(platform, job, f"gone-host:{4000 + attempt}:x", heartbeat_age_s=3600)
        with make_client(platform) as client:
            body = client.get(f"{JOBS}/{job}", headers=a).json()
    assert body["status"] == "failed" and body["error"]["code"] == "job_interrupted"
    message = body["error"]["message"]
    assert f"stopped {MAX_AUTOMATIC_RESTARTS + 1} times" in message
    assert "lower batch_size" in message and "create the job again" in message


def test_restart_cancels_a_job_whose_cancel_was_requested(platform):
    a, job = _queued_job(platform)
    _force_running(platform, job, "gone-host:4242:abcd", heartbeat_age_s=3600)
    with platform.store.write() as session:
        session.get(FineTuningJob, job).cancel_requested = True
    with make_client(platform) as client:
        assert client.get(f"{JOBS}/{job}", headers=a).json()["status"] == "cancelled"


def test_restart_recovers_a_dead_local_owner_at_once(platform):
    import os
    import socket
    import subprocess
    import sys

    a, job = _queued_job(platform)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert int(dead) != os.getpid()
    # a heartbeat 1 s old is not stale, but its owner's process is gone: recovered at once
    _force_running(platform, job, f"{socket.gethostname()}:{dead}:x", heartbeat_age_s=1)
    with make_client(platform) as client:
        body = client.get(f"{JOBS}/{job}", headers=a).json()
        assert body["status"] == "queued"
        event = client.get(f"{JOBS}/{job}/events", headers=a).json()["data"][0]
        assert event["data"]["restart"] == 1


def test_metadata_round_trips_and_filters_the_list_and_integrations_are_refused(client):
    import openai

    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines()).json()["id"]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    tagged = sdk.fine_tuning.jobs.create(model="base", training_file=file_id,
                                         metadata={"team": "search", "run": "nightly-7"})
    other = sdk.fine_tuning.jobs.create(model="base", training_file=file_id,
                                        metadata={"team": "ads"})
    sdk.fine_tuning.jobs.create(model="base", training_file=file_id)
    assert sdk.fine_tuning.jobs.retrieve(tagged.id).metadata == {"team": "search",
                                                                 "run": "nightly-7"}
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "search"})] == [tagged.id]
    assert [j.id for j in sdk.fine_tuning.jobs.list(metadata={"team": "ads"})] == [other.id]
    assert list(sdk.fine_tuning.jobs.list(metadata={"team": "search", "run": "x"})) == []
    assert len(list(sdk.fine_tuning.jobs.list())) == 3
    for bad, match in (({f"k{i}": "v" for i in range(17)}, "at most 16"),
                       ({"k" * 65: "v"}, "1 to 64 characters"), ({"k": "v" * 513}, "at most 512")):
        with pytest.raises(openai.BadRequestError, match=match):
            sdk.fine_tuning.jobs.create(model="base", training_file=file_id, metadata=bad)
    with pytest.raises(openai.BadRequestError, match="integrations .* not supported"):
        sdk.fine_tuning.jobs.create(model="base", training_file=file_id, integrations=[
            {"type": "wandb", "wandb": {"project": "p"}}])


def test_pause_and_resume_through_the_openai_client(client):
    import openai

    a = tenant_key(client, "acme")
    file_id = upload(client, a, classification_lines()).json()["id"]
    sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                        http_client=client, max_retries=0)
    job = sdk.fine_tuning.jobs.create(model="base", training_file=file_id)
    assert wait_status(client, a, job.id, {"queued"})["status"] == "queued"
    assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"
    assert sdk.fine_tuning.jobs.pause(job.id).status == "paused"  # idempotent
    resumed = sdk.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    with pytest.raises(openai.BadRequestError, match="only a paused job can be resumed"):
        sdk.fine_tuning.jobs.resume(job.id)
    sdk.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.BadRequestError, match="only a queued or running job"):
        sdk.fine_tuning.jobs.pause(job.id)
    types = [e.type for e in sdk.fine_tuning.jobs.list_events(job.id)]
    assert types[:3] == ["cancelled", "resumed", "paused"]
    b = tenant_key(client, "globex")
    assert client.post(f"{JOBS}/{job.id}/pause", headers=b).status_code == 404


def test_a_succeeded_job_publishes_its_step_metrics_as_a_result_file(platform, peft_adapter):
    """The scripted run's steps reach the job's result file (OpenAI's CSV header), even at the
    file quota; the file deletes alone (the job keeps its id) or with the job's adapter."""
    import openai

    from tests.support.scripted_runner import ScriptedRunner
    from training.jobs.results import COLUMNS

    platform.settings.tenant_max_files = 1  # the result files are stored even at the quota
    runner = ScriptedRunner(peft_adapter, steps=3, valid_every=2)
    # parity_engine None: no PEFT reference is computed for the check that has no engine
    with make_client(platform, runner=runner, concurrency=1, parity_engine=None) as client:
        a = tenant_key(client, "acme")
        file_id = upload(client, a, classification_lines()).json()["id"]
        sdk = openai.OpenAI(base_url="http://testserver/v1", api_key=a["Authorization"][7:],
                            http_client=client, max_retries=0)
        ids = [sdk.fine_tuning.jobs.create(model="base", training_file=file_id,
                                           suffix="support").id for _ in range(2)]
        for job_id in ids:
            assert wait_status(client, a, job_id, {"succeeded", "failed"},
                               timeout_s=60)["status"] == "succeeded"
        job = sdk.fine_tuning.jobs.retrieve(ids[0])
        assert len(job.result_files) == 1
        result_id = job.result_files[0]
        info = sdk.files.retrieve(result_id)
        assert (info.purpose, info.filename, info.status) == (
            "fine-tune-results", "step_metrics.csv", "processed")
        text = sdk.files.content(result_id).text
        lines = text.splitlines()
        assert lines[0] == ",".join(COLUMNS)
        assert lines[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
        metrics = [e.data for e in sdk.fine_tuning.jobs.list_events(job.id, limit=100)
                   if e.type == "metrics"][::-1]
        rows = [line.split(",") for line in lines[1:]]
        assert [int(r[0]) for r in rows] == [m["step"] for m in metrics] == [1, 2, 3]
        assert [float(r[1]) for r in rows] == [m["train_loss"] for m in metrics]
        assert [r[3] for r in rows] == ["", repr(metrics[1]["valid_loss"]), ""]
        assert all(r[2] == r[4] == "" for r in rows), "token accuracy is not measured"
        assert [f.id for f in sdk.files.list(purpose="fine-tune-results")] == [
            sdk.fine_tuning.jobs.retrieve(ids[1]).result_files[0], result_id]

        r = upload(client, a, text.encode(), "step_metrics.csv", purpose="fine-tune-results")
        assert r.status_code == 400 and "upload datasets with 'fine-tune'" in r.text
        with pytest.raises(openai.BadRequestError, match="purpose 'fine-tune-results'"):
            sdk.fine_tuning.jobs.create(model="base", training_file=result_id)

        # both jobs logged the same steps: one blob, kept until its last file goes
        assert sdk.files.delete(result_id).deleted
        with pytest.raises(openai.NotFoundError):
            sdk.files.retrieve(result_id)
        assert sdk.fine_tuning.jobs.retrieve(job.id).result_files == [result_id]
        assert platform.artifacts.exists(info.model_extra["sha256"])
        assert client.delete("/v1/adapters/support", headers=a).status_code == 200
        assert [f.id for f in sdk.files.list()] == [file_id]
        assert not platform.artifacts.exists(info.model_extra["sha256"])
