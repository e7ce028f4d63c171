"""Running one job: validate its files, write its spec to its workspace in the artifact store
(:mod:`training.jobs.workspace`), submit it to the runner, follow the run's progress from the
store into job events, and finish it (publish the adapter the run stored and the job's step
metrics as its result file, fail with a reason, or cancel). Nothing reaches the run through a
local path, so it can run on any machine."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from services.hot_swap import ChampionSwitcher
from services.platform import Platform
from services.store.models import AdapterTask, AdapterVersion, DatasetFile, FineTuningJob, JobStatus
from training import progress
from training.config import TrainConfig
from training.jobs import store
from training.jobs.champion import champion_spec
from training.jobs.engine_scoring import scores_on_engine
from training.jobs.entrypoint import job_entrypoint
from training.jobs.files import file_bytes, validate_file
from training.jobs.hyperparameters import train_config_fields
from training.jobs.parity import ParityEngine
from training.jobs.publish import publish
from training.jobs.results import add_result_file, put_result_file
from training.jobs.states import EventType
from training.jobs.workspace import LOCAL_FIELDS, RESULT, SPEC, DataInput, JobSpec, JobWorkspace
from training.runners.base import JobRunner, RunSpec, RunState

log = logging.getLogger("tuneloop.jobs")

MAX_AUTOMATIC_RESTARTS = 2
"""Times a job is queued again because the process running it (tuneloop, or the run's driver on
a cluster) was lost; then it fails with ``job_interrupted``."""


def job_dir(platform: Platform, job_id: str) -> Path:
    return platform.settings.data_dir.resolve() / "jobs" / job_id


def _files(platform: Platform, job: FineTuningJob) -> dict[str, DatasetFile | None]:
    with platform.store.read() as session:
        train = session.get(DatasetFile, job.training_file)
        valid = session.get(DatasetFile, job.validation_file) if job.validation_file else None
    return {"training": train, "validation": valid}


def validate_job_files(platform: Platform, job: FineTuningJob) -> None:
    """validating_files -> queued, or failed listing every problem with its line number
    (files are checked again against the job's labels and prompt template)."""
    problems: list[str] = []
    summary: dict[str, Any] = {}
    for kind, row in _files(platform, job).items():
        if row is None:
            continue
        options: dict[str, Any] = {}
        if job.task == AdapterTask.CLASSIFICATION:
            options = {"labels": job.labels, "template": job.prompt_template}
        report = validate_file(platform, file_bytes(platform, row), row.filename, job.task,
                               **options)
        problems += [f"{kind} file {row.id} ({row.filename}) {issue}" for issue in report.issues]
        summary[kind] = report.stats.to_dict()
    with platform.store.write() as session:
        current = store.get_job(session, None, job.id)
        if JobStatus(current.status) is not JobStatus.VALIDATING_FILES:
            return  # cancelled meanwhile, or another process validated it
        if problems:
            shown = "\n".join(problems[:50])
            store.fail(session, current, "invalid_training_file",
                       f"{len(problems)} problem(s) in the job's files; fix them, upload again "
                       f"and create a new job:\n{shown}")
            return
        store.transition(session, current, JobStatus.QUEUED, event=(
            EventType.VALIDATED, "files validated: " + ", ".join(
                f"{k} {v['examples']} examples"
                + _dropped_text(v.get("duplicates"), v.get("conflicting_labels"))
                for k, v in summary.items()), summary))


def _dropped_text(duplicates: int | None, conflicts: int | None) -> str:
    """`` (2 duplicates, 1 conflicting label dropped)``, or nothing when none were dropped."""
    parts = [f"{n} {what}{'s' if n != 1 else ''}" for n, what in
             ((duplicates or 0, "duplicate"), (conflicts or 0, "conflicting label")) if n]
    return f" ({', '.join(parts)} dropped)" if parts else ""


def workspace_of(platform: Platform, job_id: str) -> JobWorkspace:
    return JobWorkspace.of(platform.settings.resolved_artifacts_url, job_id)


def build_config(platform: Platform, job: FineTuningJob) -> TrainConfig:
    """The run's TrainConfig as this process sees it (the job's files copied out of the artifact
    store into its local job directory, for publishing); progress and Ray Train storage are
    the job's workspace in the store, wherever the run happens."""
    settings = platform.settings
    workspace = workspace_of(platform, job.id)
    directory = job_dir(platform, job.id)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str | None] = {"training": None, "validation": None}
    for kind, row in _files(platform, job).items():
        if row is not None:
            path = directory / f"{kind}{_suffix(row)}"
            path.write_bytes(file_bytes(platform, row))
            paths[kind] = str(path)
    extra: dict[str, Any] = {}
    if job.task == AdapterTask.CLASSIFICATION:
        extra = {"labels": job.labels, "prompt_template": job.prompt_template}
    return TrainConfig(
        base_model=str(platform.base_model_dir), output_dir=str(directory / "output"),
        task=AdapterTask(job.task), train_file=paths["training"], eval_file=paths["validation"],
        seed=job.seed, num_workers=settings.train_workers,
        cpus_per_worker=settings.train_cpus_per_worker, use_gpu=settings.train_use_gpu,
        storage_path=workspace.ray_url, run_name=job.run_name,
        progress_file=workspace.progress_url, base_fingerprint=platform.base_fingerprint,
        **extra, **train_config_fields(job.hyperparameters))


def _suffix(row: DatasetFile) -> str:
    return ".csv" if row.format == "csv" else ".jsonl"


def job_spec(platform: Platform, job: FineTuningJob, config: TrainConfig) -> JobSpec:
    """What the run needs, by artifact key only (``job.json`` in the job's workspace)."""
    files = _files(platform, job)
    parent_key = None
    if job.parent_version_id is not None:
        with platform.store.read() as session:
            parent_key = session.get_one(AdapterVersion, job.parent_version_id).artifact_key
    training, validation = files["training"], files["validation"]
    assert training is not None  # a job always has a training file
    return JobSpec(
        artifacts_url=platform.settings.resolved_artifacts_url,
        config={**config.to_dict(), **dict.fromkeys(LOCAL_FIELDS)},
        base_fingerprint=platform.base_fingerprint,
        training=DataInput(training.sha256, _suffix(training)),
        validation=DataInput(validation.sha256, _suffix(validation)) if validation else None,
        parent_key=parent_key, champion=champion_spec(platform, job))


SUMMARY_KEYS = ("accuracy", "macro_f1", "eval_loss", "token_accuracy", "exact_match", "rouge_l",
                "bleu")
"""The held-out metrics an evaluation event's message names (all in its data)."""


def _metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{key} {metrics[key]:.3f}" for key in SUMMARY_KEYS if key in metrics)


def _without_samples(metrics: dict[str, Any]) -> dict[str, Any]:
    """The evaluation without its reply samples: they are kept with the version's metrics, the
    job's events stay small."""
    return {k: {m: v for m, v in value.items() if m != "samples"} if isinstance(value, dict)
            else value for k, value in metrics.items()}


def _eval_message(metrics: dict[str, Any]) -> str:
    adapter, base = metrics.get("adapter") or {}, metrics.get("base") or {}
    parts = []
    for key in SUMMARY_KEYS:
        if key in adapter:
            text = f"{key} {adapter[key]:.3f}"
            if key in base:
                text += f" (base {base[key]:.3f})"
            parts.append(text)
    return "evaluated on the held-out split: " + (", ".join(parts) or "no metrics")


VALIDATION_KEYS = ("valid_loss", "best_step", "best_valid_loss", "early_stopped")
"""What a run's step events say about its validations, kept in the job's ``progress``."""


@dataclass
class RunFollower:
    """Turns the run's progress events into job events and the job's ``progress`` snapshot."""

    job_id: str
    reader: progress.ProgressReader
    tokens_by_step: dict[int, int] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    started_at: float | None = None

    @classmethod
    def of(cls, platform: Platform, job_id: str) -> RunFollower:
        return cls(job_id, progress.ProgressReader(workspace_of(platform, job_id).progress_url))

    def poll(self, session: Session) -> None:
        for event in self.reader.poll():
            self._apply(session, event)

    def _apply(self, session: Session, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "training_started":
            self.started_at = event.get("time")
            self.snapshot.update(total_steps=event.get("total_steps"), step=0)
            store.add_event(session, self.job_id, EventType.MESSAGE,
                            f"training {event.get('total_steps')} steps on "
                            f"{event.get('num_workers')} worker(s), {event.get('examples')} "
                            "examples", _plain(event))
        elif kind == "resumed":
            store.add_event(session, self.job_id, EventType.MESSAGE,
                            f"resumed from the checkpoint at step {event.get('step')} (a "
                            "worker or tuneloop restarted); earlier steps are not repeated",
                            _plain(event))
        elif kind == "validated":
            store.add_event(session, self.job_id, EventType.MESSAGE,
                            f"data ready: {event.get('train_examples')} training examples, "
                            f"{event.get('eval_examples')} held out ({event.get('eval_source')})"
                            + _dropped_text(event.get("duplicates_dropped"),
                                            event.get("conflicting_labels_dropped")),
                            _plain(event))
        elif kind == "step":
            step, total = int(event["step"]), int(event["total_steps"])
            self.tokens_by_step[step] = int(event.get("tokens") or 0)
            started = self.started_at or event.get("time")
            elapsed = max(0.0, float(event.get("time", 0)) - float(started or 0))
            eta = elapsed / step * (total - step) if step else None
            self.snapshot.update(step=step, total_steps=total, loss=event.get("loss"),
                                 tokens_per_s=event.get("tokens_per_s"), epoch=event.get("epoch"),
                                 learning_rate=event.get("learning_rate"), eta_s=eta)
            data = {"step": step, "total_steps": total, "train_loss": event.get("loss"),
                    "tokens_per_s": event.get("tokens_per_s"), "epoch": event.get("epoch"),
                    "learning_rate": event.get("learning_rate")}
            # Validation steps carry valid_loss; the run's last step its best step and the stop.
            self.snapshot.update({k: event[k] for k in VALIDATION_KEYS if k in event})
            message = f"Step {step}/{total}: training loss={event.get('loss'):.4f}"
            if event.get("valid_loss") is not None:
                data["valid_loss"] = event["valid_loss"]
                message += f", validation loss={event['valid_loss']:.4f}"
            store.add_event(session, self.job_id, EventType.METRICS, message, data)
        elif kind == "checkpoint":
            step = int(event["step"])
            metrics = {"step": step, "train_loss": self.snapshot.get("loss")}
            if store.add_checkpoint(session, self.job_id, step, metrics):
                store.add_event(session, self.job_id, EventType.CHECKPOINT,
                                f"checkpoint saved at step {step}", metrics)
        elif kind == "early_stopped":
            data = {**_plain(event), "early_stopped": True}
            store.add_event(session, self.job_id, EventType.MESSAGE,
                            f"stopped early at step {data.get('step')}: validation loss did not "
                            f"improve for {data.get('patience')} validations; the adapter is "
                            f"the one from step {data.get('best_step')} (validation loss "
                            f"{data.get('best_valid_loss'):.4f})", data)
        elif kind == "evaluated":
            data = _without_samples(_plain(event))
            store.add_event(session, self.job_id, EventType.EVALUATED, _eval_message(data), data)
        elif kind == "champion_evaluated":
            data = _plain(event)
            store.add_event(session, self.job_id, EventType.EVALUATED,
                            f"champion {data.get('version')} on the same held-out split: "
                            + _metrics_text(data), {"champion": data})
        elif kind == "failed":
            self.failure = str(event.get("reason") or event.get("error") or "unknown error")

    @property
    def trained_tokens(self) -> int:
        return sum(self.tokens_by_step.values())


def _plain(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("event", "time")}


@dataclass
class JobContext:
    """What a running job needs from its manager."""

    platform: Platform
    runner: JobRunner
    owner: str
    stopping: threading.Event
    poll_s: float = 1.0
    switcher: ChampionSwitcher | None = None
    parity_engine: ParityEngine | None = None


def run_claimed_job(ctx: JobContext, job: FineTuningJob) -> JobStatus:
    """Run a job this owner moved to ``running``; returns the status it ended in (``queued``
    when tuneloop is shutting down: the next start runs it again under the same run name,
    so Ray Train resumes from its latest checkpoint)."""
    platform = ctx.platform
    try:
        config = build_config(platform, job)
        if scores_on_engine(ctx.parity_engine, job):  # publishing scores the split there
            config = replace(config, evaluate=False)
        workspace = workspace_of(platform, job.id)
        workspace.write_json(SPEC, job_spec(platform, job, config).to_dict())
        settings = platform.settings
        env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        local = settings.training_runner == "local"
        if local:  # the same machine: the run uses this process's base model
            env["TUNELOOP_BASE_MODEL"] = str(platform.base_model_dir)
        ctx.runner.submit(RunSpec(
            job_id=job.id, entrypoint=job_entrypoint(workspace, None if local else "python"),
            num_workers=config.num_workers, cpus_per_worker=config.cpus_per_worker or 1.0,
            gpus_per_worker=1 if config.use_gpu else 0, image=settings.kuberay_image, env=env))
    except Exception as exc:
        log.exception("job %s could not start", job.id)
        return _finish_failed(ctx, job, "setup_failed",
                              f"the training run could not start: {exc}; check the runner "
                              f"settings (TUNELOOP_TRAINING_RUNNER={platform.settings.training_runner})")
    with platform.store.write() as session:
        store.add_event(session, job.id, EventType.STARTED,
                        f"training run {job.run_name} submitted to the {job.runner} runner",
                        {"run_name": job.run_name, "runner": job.runner})
    follower = RunFollower.of(platform, job.id)
    follower.reader.poll()  # a resumed job: skip the events of its earlier runs
    return follow_run(ctx, job, follower)


def follow_run(ctx: JobContext, job: FineTuningJob, follower: RunFollower) -> JobStatus:
    """Poll the run until it ends (heartbeat, events, cancel, shutdown); finish the job."""
    platform = ctx.platform
    while True:
        status = ctx.runner.status(job.id)
        with platform.store.write() as session:
            follower.poll(session)
            row = store.heartbeat(session, job.id, ctx.owner, progress=dict(follower.snapshot),
                                  trained_tokens=follower.trained_tokens or None)
        if row is None:  # no longer ours (marked failed as stale by another process)
            ctx.runner.cancel(job.id)
            return JobStatus.FAILED
        if status.state.is_terminal:
            break
        if row.cancel_requested:
            ctx.runner.cancel(job.id)
            return _finish(ctx, job, JobStatus.CANCELLED, EventType.CANCELLED,
                           "job cancelled; the training run was stopped and its workers freed")
        if row.pause_requested:
            ctx.runner.cancel(job.id)
            step = follower.snapshot.get("step")
            return _finish(ctx, job, JobStatus.PAUSED, EventType.PAUSED,
                           f"job paused at step {step}; its checkpoints are kept and resuming "
                           "continues from the latest one")
        if ctx.stopping.is_set():
            ctx.runner.cancel(job.id)
            return _finish(ctx, job, JobStatus.QUEUED, EventType.QUEUED,
                           "tuneloop is shutting down: the run was stopped and the job queued "
                           "again; it resumes from its latest checkpoint on the next start")
        time.sleep(ctx.poll_s)
    if status.state is RunState.CANCELLED:
        return _finish(ctx, job, JobStatus.CANCELLED, EventType.CANCELLED,
                       "the training run was stopped outside tuneloop")
    if status.state is RunState.FAILED and follower.failure is None:
        return _requeue_lost_run(ctx, job, status.message or "it ended without a message")
    if status.state is RunState.FAILED:
        return _finish_failed(ctx, job, "training_failed", f"training failed: {follower.failure}")
    return _publish(ctx, job, follower)


@contextmanager
def _heartbeating(ctx: JobContext, job: FineTuningJob, every_s: float = 5.0) -> Iterator[None]:
    """Keep the job's heartbeat fresh while publishing (model loads and checks take minutes),
    so no other process takes the job for stale."""
    done = threading.Event()

    def beat() -> None:
        while not done.wait(every_s):
            try:
                with ctx.platform.store.write() as session:
                    store.heartbeat(session, job.id, ctx.owner)
            except Exception:  # a missed beat is retried
                log.exception("heartbeat of job %s failed", job.id)

    thread = threading.Thread(target=beat, name=f"tuneloop-heartbeat-{job.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(every_s + 5)


def _publish(ctx: JobContext, job: FineTuningJob, follower: RunFollower) -> JobStatus:
    platform = ctx.platform
    files = _files(platform, job)
    parent_ref = job.model if job.parent_version_id is not None else None

    def record(type_: EventType, message: str, data: dict | None = None) -> None:
        with platform.store.write() as session:
            store.add_event(session, job.id, type_, message, data)

    try:
        outcome = workspace_of(platform, job.id).read_json(RESULT)
        if outcome is None:
            raise RuntimeError(f"the run finished without writing {RESULT} to the job's "
                               "workspace in the artifact store")
        with _heartbeating(ctx, job):
            adapter_dir = platform.artifacts.materialize_dir(outcome["adapter_key"])
            result = publish(platform, job, adapter_dir, config=build_config(platform, job),
                             summary=outcome["metrics"], checks=outcome.get("checks"),
                             files=files, parent_ref=parent_ref, record=record,
                             switcher=ctx.switcher, parity_engine=ctx.parity_engine)
    except Exception as exc:
        log.exception("publishing job %s failed", job.id)
        return _finish_failed(ctx, job, "publish_failed",
                              f"training finished but registering the adapter failed: {exc}")
    ref = result.ref
    with platform.store.write() as session:
        row = store.get_job(session, None, job.id)
        row.result_version_id = result.version.id
        row.trained_tokens = follower.trained_tokens or row.trained_tokens
    if not result.ready:
        return _finish_failed(ctx, job, "parity_failed", (
            f"{result.failure}. The engine does not run this adapter like PEFT does: check that "
            "the engine supports its target modules and rank (TUNELOOP_MAX_LORA_RANK), then "
            "create the job again"))
    result_file = put_result_file(platform, job.id)
    with platform.store.write() as session:
        row = store.get_job(session, None, job.id)
        row.fine_tuned_model = ref
        if result_file is not None:
            add_result_file(session, platform, row, result_file)
        store.add_event(session, job.id, EventType.PUBLISHED, f"published {ref}",
                        {"fine_tuned_model": ref, "version": result.version.version,
                         "gate_passed": result.gate.passed})
        if result.promoted:
            store.add_event(session, job.id, EventType.PROMOTED,
                            f"{ref} is now the champion of {job.adapter_name}", {"version": ref})
        store.transition(session, row, JobStatus.SUCCEEDED,
                         event=(EventType.SUCCEEDED, f"job succeeded: {ref}", None))
    return JobStatus.SUCCEEDED


def _requeue_lost_run(ctx: JobContext, job: FineTuningJob, why: str) -> JobStatus:
    """The run died without reporting a failure of its own (its driver or machine was lost, or
    it was killed): queue the job again, so the next run resumes from the latest checkpoint in
    its workspace; after MAX_AUTOMATIC_RESTARTS of those it fails."""
    with ctx.platform.store.write() as session:
        row = store.get_job(session, None, job.id)
        if row.status != str(JobStatus.RUNNING):
            return JobStatus(row.status)
        restarts = store.count_restarts(session, job.id)
        if restarts >= MAX_AUTOMATIC_RESTARTS:
            store.fail(session, row, "job_interrupted", (
                f"the training run was lost {restarts + 1} times without reporting an error "
                f"(last: {why}); if it runs out of memory, lower batch_size, max_length or "
                "TUNELOOP_TRAIN_WORKERS, then create the job again"))
            return JobStatus.FAILED
        store.transition(session, row, JobStatus.QUEUED, event=(
            EventType.QUEUED, f"the training run was lost without reporting an error ({why}); "
            "the job is queued again and resumes from its latest checkpoint",
            {"restart": restarts + 1, "lost_run": why}))
    return JobStatus.QUEUED


def _finish(ctx: JobContext, job: FineTuningJob, status: JobStatus, event: EventType,
            message: str) -> JobStatus:
    with ctx.platform.store.write() as session:
        row = store.get_job(session, None, job.id)
        if row.status != str(JobStatus.RUNNING):
            return JobStatus(row.status)
        store.transition(session, row, status, event=(event, message, None))
    return status


def _finish_failed(ctx: JobContext, job: FineTuningJob, code: str, message: str) -> JobStatus:
    with ctx.platform.store.write() as session:
        row = store.get_job(session, None, job.id)
        if row.status != str(JobStatus.RUNNING):
            return JobStatus(row.status)
        store.fail(session, row, code, message)
    return JobStatus.FAILED
