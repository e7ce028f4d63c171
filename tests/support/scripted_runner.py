"""A JobRunner that plays a scripted run (no Ray) for job manager tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from unittest import mock

from training import progress
from training.config import TrainConfig
from training.jobs.entrypoint import PreparedRun, prepare_run
from training.jobs.workspace import RESULT, JobWorkspace
from training.runners.base import RunSpec, RunState, RunStatus


class ScriptedRunner:
    """A JobRunner that plays a run from a script instead of starting Ray: each ``status`` call
    advances one stage (start, steps with checkpoints, evaluation + output). Like the real job
    entrypoint it fetches the job's inputs from its workspace (:func:`prepare_run`), and writes
    progress events, the adapter and ``result.json`` through the artifact store."""

    def __init__(self, adapter_dir: Path, *, steps: int = 3, fail_with: str | None = None,
                 hold: bool = False, accuracy: float = 0.9, checks: bool = False,
                 lose_runs: int = 0, valid_every: int = 0):
        self.adapter_dir = adapter_dir
        self.valid_every = valid_every  # steps that report a validation loss (0: none)
        self.accuracy = accuracy  # the candidate's held-out accuracy the "recipe" reports
        # checks: run the job entrypoint's real checks (champion on the held-out split, PEFT
        # parity reference; loads the real model) after the scripted training
        self.checks = checks
        self.steps = steps
        self.fail_with = fail_with
        self.hold = hold
        # lose_runs: the first N runs die after their first step without reporting anything (a
        # lost driver or machine); the next submission continues from the last stage
        self.lose_runs = lose_runs
        self.configs: dict[str, TrainConfig] = {}
        self.runs: dict[str, tuple[JobWorkspace, PreparedRun]] = {}
        self.specs: dict[str, RunSpec] = {}
        self.stage: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.submissions: list[str] = []

    def submit(self, spec: RunSpec) -> None:
        self.cancelled.discard(spec.job_id)  # submitted again (resumed): a new run of the job
        self.submissions.append(spec.job_id)
        self.specs[spec.job_id] = spec
        workspace = JobWorkspace(spec.entrypoint[spec.entrypoint.index("--job") + 1])
        with mock.patch.dict(os.environ, spec.env):  # what the runner gives the run
            run = prepare_run(workspace, Path(tempfile.mkdtemp(prefix="scripted-run-")))
        self.runs[spec.job_id] = (workspace, run)
        self.configs[spec.job_id] = run.config
        self.stage.setdefault(spec.job_id, 0)

    def cancel(self, job_id: str) -> None:
        self.cancelled.add(job_id)

    def status(self, job_id: str) -> RunStatus:
        if job_id in self.cancelled:
            return RunStatus(RunState.CANCELLED, "cancelled")
        config, stage = self.configs[job_id], self.stage[job_id]
        self.stage[job_id] = stage + 1
        def emit(event, **f):
            progress.emit(config.progress_file, event, **f)

        if stage == 0:
            emit("started", run_name=config.run_name)
            emit("training_started", total_steps=self.steps, num_workers=1, examples=20)
            return RunStatus(RunState.RUNNING)
        if self.hold:
            return RunStatus(RunState.RUNNING)
        if stage == 2 and self.lose_runs > 0 and self.submissions.count(job_id) <= self.lose_runs:
            self.stage[job_id] = 1  # the next run resumes after the first step's checkpoint
            return RunStatus(RunState.FAILED, "JOB_SUPERVISOR_ACTOR_DIED: the driver's node died")
        if stage <= self.steps:
            validation = ({"valid_loss": 3.0 / stage}
                          if self.valid_every and stage % self.valid_every == 0 else {})
            emit("step", step=stage, total_steps=self.steps, epoch=stage / self.steps,
                 loss=2.0 / stage, tokens=100, tokens_per_s=50.0, learning_rate=1e-4,
                 **validation)
            emit("checkpoint", step=stage)
            return RunStatus(RunState.RUNNING)
        if self.fail_with:
            emit("failed", reason=self.fail_with, error="TrainingFailed")
            return RunStatus(RunState.FAILED, "exit code 1")
        workspace, run = self.runs[job_id]
        evaluation = {}
        if config.evaluate:  # like the recipe: off when publishing scores on the engine
            evaluation = {"adapter": {"accuracy": self.accuracy, "macro_f1": 0.88},
                          "base": {"accuracy": 0.4, "macro_f1": 0.3}}
            emit("evaluated", **evaluation)
        metrics = {"eval": evaluation, "train": {"loss": 0.5}, "datasets": {"train_examples": 18},
                   "hyperparameters": config.hyperparameters(), "wall_time_s": 1.0}
        emit("succeeded")
        checks = None
        if self.checks:
            from training.jobs.entrypoint import run_checks

            checks = run_checks(config, self.adapter_dir, run.champion)
        workspace.write_json(RESULT, {"adapter_key": run.store.put_dir(self.adapter_dir),
                                      "metrics": metrics, "checks": checks})
        progress.flush()
        return RunStatus(RunState.SUCCEEDED)
