"""The job manager end to end with a scripted runner (no Ray): events, checkpoints, publish with
lineage, auto_promote, cancel of a running job, failure reasons, shutdown re-queueing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from services import registry
from services.store.models import JobStatus
from tests.support.scripted_runner import ScriptedRunner
from training.jobs import store
from training.jobs.files import store_file
from training.jobs.intake import JobRequest, create_job
from training.jobs.manager import JobManager


def dataset(n: int = 20) -> bytes:
    return "".join(json.dumps({"text": f"sample text {i}", "label": "pos" if i % 2 else "neg"})
                   + "\n" for i in range(n)).encode()


@pytest.fixture
def training_file(platform, tenant):
    return store_file(platform, tenant, dataset(), "train.jsonl")


def job_row(platform, job_id):
    with platform.store.read() as session:
        return store.get_job(session, None, job_id)


def events(platform, job_id):
    with platform.store.read() as session:
        rows, _ = store.list_events(session, job_id, limit=1000, oldest_first=True)
    return rows


def test_successful_job_publishes_a_version_with_lineage(platform, tenant, training_file,
                                                         peft_adapter):
    runner = ScriptedRunner(peft_adapter, steps=3)
    job = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id,
                     suffix="sentiment", hyperparameters={"n_epochs": 1, "lora_r": 4}, seed=3))
    manager = JobManager(platform, runner=runner, poll_s=0.01)
    assert manager.run_job(job.id) is JobStatus.SUCCEEDED

    row = job_row(platform, job.id)
    assert row.status == "succeeded" and row.fine_tuned_model == "sentiment@v1"
    assert row.trained_tokens == 300 and row.finished_at is not None
    assert row.progress["step"] == 3 and row.progress["total_steps"] == 3
    types = [e.type for e in events(platform, job.id)]
    assert types[:3] == ["created", "validated", "started"]
    assert types.count("metrics") == 3 and types.count("checkpoint") == 3
    assert types[-5:] == ["evaluated", "gate_decision", "parity_skipped", "published",
                          "succeeded"]
    evaluated = next(e for e in events(platform, job.id) if e.type == "evaluated")
    assert "accuracy 0.900 (base 0.400)" in evaluated.message
    gate = next(e for e in events(platform, job.id) if e.type == "gate_decision")
    assert gate.data["passed"] and gate.data["reason"] == "beats_base"
    assert gate.data["champion_version"] is None and gate.data["candidate"] == 0.9
    skipped = next(e for e in events(platform, job.id) if e.type == "parity_skipped")
    assert "no serving engine in this process" in skipped.data["reason"]
    with platform.store.read() as session:
        checkpoints, _ = store.list_checkpoints(session, job.id)
        version = registry.get_version(session, tenant, "sentiment", 1)
    assert [c.step for c in checkpoints] == [3, 2, 1]

    config = runner.configs[job.id]
    assert config.task == "classification" and config.labels == ["neg", "pos"]
    assert config.epochs == 1 and config.lora_r == 4 and config.seed == 3
    assert config.run_name == f"tuneloop-{job.id}"
    assert version.task == "classification" and version.labels == ["neg", "pos"]
    assert version.metrics["eval"]["adapter"]["accuracy"] == 0.9
    assert version.state == "ready" and version.metrics["gate"]["passed"]
    assert "no serving engine" in version.metrics["parity"]["skipped"]
    lineage = version.lineage
    assert lineage["job_id"] == job.id
    assert lineage["training_file"]["sha256"] == training_file.sha256
    assert lineage["base_fingerprint"] == platform.base_fingerprint
    assert lineage["parent_version"] is None
    assert lineage["hyperparameters"]["n_epochs"] == 1 and lineage["code_version"]


@pytest.mark.parametrize("cpus", [None, 3.0])
def test_cpus_per_worker_setting_reaches_the_run(platform, tenant, training_file, peft_adapter,
                                                 cpus):
    platform.settings = platform.settings.model_copy(update={"train_cpus_per_worker": cpus})
    runner = ScriptedRunner(peft_adapter, steps=1)
    job = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id,
                                                  suffix="cpus"))
    assert JobManager(platform, runner=runner, poll_s=0.01).run_job(job.id) is JobStatus.SUCCEEDED
    # None: the recipe shares the Ray cluster's CPUs among the workers (KubeRay pods get 1)
    assert runner.configs[job.id].cpus_per_worker == cpus
    assert runner.specs[job.id].cpus_per_worker == (cpus or 1.0)


def test_warm_start_and_auto_promote(platform, tenant, training_file, peft_adapter):
    runner = ScriptedRunner(peft_adapter, steps=1)
    manager = JobManager(platform, runner=runner, poll_s=0.01)
    first = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id,
                       suffix="sent"))
    assert manager.run_job(first.id) is JobStatus.SUCCEEDED
    # v2 warm-starts from v1 (no suffix: same adapter name) and is not promoted
    second = create_job(platform, tenant, JobRequest(model="sent@v1", training_file=training_file.id))
    assert second.adapter_name == "sent"
    assert manager.run_job(second.id) is JobStatus.SUCCEEDED
    assert runner.configs[second.id].parent_adapter is not None
    third = create_job(platform, tenant, JobRequest(model="sent", training_file=training_file.id,
                       auto_promote=True))
    assert manager.run_job(third.id) is JobStatus.SUCCEEDED
    with platform.store.read() as session:
        assert registry.resolve(session, tenant, "sent").version == 3
        v2 = registry.get_version(session, tenant, "sent", 2)
    assert v2.lineage["parent_version"] == "sent@v1"
    # the job told the run which champion to score (test_publish_checks.py runs the checks)
    champion = runner.runs[second.id][1].champion  # from job.json in the job's workspace
    assert champion["version"] == "sent@v1" and champion["labels"] == ["neg", "pos"]
    assert (Path(champion["adapter_dir"]) / "adapter_config.json").is_file()
    assert "did not evaluate the champion" in v2.metrics["comparison"]["champion_skipped"]
    assert job_row(platform, second.id).fine_tuned_model == "sent@v2"
    assert "promoted" in [e.type for e in events(platform, third.id)]
    assert "promoted" not in [e.type for e in events(platform, second.id)]


def test_failed_run_reports_the_recipe_reason(platform, tenant, training_file, peft_adapter):
    runner = ScriptedRunner(peft_adapter, steps=1, fail_with="out of memory on worker 0; "
                            "lower batch_size")
    job = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    assert JobManager(platform, runner=runner, poll_s=0.01).run_job(job.id) is JobStatus.FAILED
    row = job_row(platform, job.id)
    assert row.error["code"] == "training_failed"
    assert "lower batch_size" in row.error["message"]
    assert events(platform, job.id)[-1].type == "failed"


def test_a_lost_run_is_queued_again_and_resumes_then_fails_after_too_many(
        platform, tenant, training_file, peft_adapter):
    from training.jobs.execute import MAX_AUTOMATIC_RESTARTS

    runner = ScriptedRunner(peft_adapter, steps=3, lose_runs=1)
    manager = JobManager(platform, runner=runner, poll_s=0.01)
    job = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    # the driver's node dies after step 1: no error of the run's own, so the job is queued again
    assert manager.run_job(job.id) is JobStatus.QUEUED
    queued = events(platform, job.id)[-1]
    assert queued.type == "queued" and "resumes from its latest checkpoint" in queued.message
    assert queued.data["restart"] == 1 and "driver's node died" in queued.data["lost_run"]
    assert manager.run_job(job.id) is JobStatus.SUCCEEDED  # the next run goes on to the end
    assert runner.submissions == [job.id, job.id]
    with platform.store.read() as session:
        checkpoints, _ = store.list_checkpoints(session, job.id)
    assert sorted(c.step for c in checkpoints) == [1, 2, 3]  # step 1 recorded once

    always_lost = ScriptedRunner(peft_adapter, steps=3, lose_runs=10)
    manager = JobManager(platform, runner=always_lost, poll_s=0.01)
    doomed = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    statuses = [manager.run_job(doomed.id) for _ in range(MAX_AUTOMATIC_RESTARTS + 1)]
    assert statuses == [JobStatus.QUEUED] * MAX_AUTOMATIC_RESTARTS + [JobStatus.FAILED]
    row = job_row(platform, doomed.id)
    assert row.error["code"] == "job_interrupted"
    assert f"lost {MAX_AUTOMATIC_RESTARTS + 1} times" in row.error["message"]


def wait_for(predicate, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_background_manager_runs_one_job_at_a_time_and_cancels(platform, tenant, training_file,
                                                               peft_adapter):
    runner = ScriptedRunner(peft_adapter, hold=True)
    manager = JobManager(platform, runner=runner, poll_s=0.02)
    a = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    b = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    manager.start()
    try:
        assert wait_for(lambda: job_row(platform, a.id).status == "running")
        assert wait_for(lambda: job_row(platform, b.id).status == "queued")
        time.sleep(0.3)
        assert job_row(platform, b.id).status == "queued"  # concurrency 1
        with platform.store.write() as session:
            store.request_cancel(session, tenant, a.id)
        assert wait_for(lambda: job_row(platform, a.id).status == "cancelled")
        assert a.id in runner.cancelled
        assert wait_for(lambda: job_row(platform, b.id).status == "running")
    finally:
        manager.stop()
    # a graceful stop stops the run and queues the job again for the next start
    row = job_row(platform, b.id)
    assert row.status == "queued" and b.id in runner.cancelled and row.owner is None
    assert "resumes from its latest checkpoint" in events(platform, b.id)[-1].message


def test_pause_stops_the_run_and_resume_runs_the_job_again_under_its_run_name(
        platform, tenant, training_file, peft_adapter):
    runner = ScriptedRunner(peft_adapter, hold=True)
    manager = JobManager(platform, runner=runner, poll_s=0.02)
    job = create_job(platform, tenant, JobRequest(model="base", training_file=training_file.id))
    manager.start()
    try:
        assert wait_for(lambda: job_row(platform, job.id).status == "running")
        with platform.store.write() as session:
            store.request_pause(session, tenant, job.id)
        assert wait_for(lambda: job_row(platform, job.id).status == "paused")
        assert job.id in runner.cancelled and job_row(platform, job.id).owner is None
        time.sleep(0.3)
        assert job_row(platform, job.id).status == "paused"  # a paused job is not claimed
        runner.hold = False
        with platform.store.write() as session:
            store.resume(session, tenant, job.id)
        manager.wake()
        assert wait_for(lambda: job_row(platform, job.id).status == "succeeded")
    finally:
        manager.stop()
    assert runner.submissions == [job.id, job.id]  # the same job (run name), submitted again
    types = [e.type for e in events(platform, job.id)]
    assert types.index("paused") < types.index("resumed") < types.index("succeeded")
