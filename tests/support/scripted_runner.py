"""A JobRunner that plays a scripted run (no Ray) for job manager tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from training import progress
from training.config import TrainConfig
from training.runners.base import RunSpec, RunState, RunStatus


class ScriptedRunner:
    """A JobRunner that plays a run from a script instead of starting Ray: each ``status`` call
    advances one stage (start, steps with checkpoints, evaluation + output) and writes the
    progress events and output files the real recipe would."""

    def __init__(self, adapter_dir: Path, *, steps: int = 3, fail_with: str | None = None,
                 hold: bool = False, accuracy: float = 0.9, checks: bool = False):
        self.adapter_dir = adapter_dir
        self.accuracy = accuracy  # the candidate's held-out accuracy the "recipe" reports
        # checks: run the job entrypoint's real checks (champion on the held-out split, PEFT
        # parity reference; loads the real model) after the scripted training
        self.checks = checks
        self.steps = steps
        self.fail_with = fail_with
        self.hold = hold
        self.configs: dict[str, TrainConfig] = {}
        self.specs: dict[str, RunSpec] = {}
        self.stage: dict[str, int] = {}
        self.cancelled: set[str] = set()
        self.submissions: list[str] = []

    def submit(self, spec: RunSpec) -> None:
        self.cancelled.discard(spec.job_id)  # submitted again (resumed): a new run of the job
        self.submissions.append(spec.job_id)
        self.specs[spec.job_id] = spec
        self.configs[spec.job_id] = TrainConfig.from_json(spec.entrypoint[-1])
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
        if stage <= self.steps:
            emit("step", step=stage, total_steps=self.steps, epoch=stage / self.steps,
                 loss=2.0 / stage, tokens=100, tokens_per_s=50.0, learning_rate=1e-4)
            emit("checkpoint", step=stage)
            return RunStatus(RunState.RUNNING)
        if self.fail_with:
            emit("failed", reason=self.fail_with, error="TrainingFailed")
            return RunStatus(RunState.FAILED, "exit code 1")
        out = Path(config.output_dir)
        shutil.copytree(self.adapter_dir, out / "adapter", dirs_exist_ok=True)
        evaluation = {"adapter": {"accuracy": self.accuracy, "macro_f1": 0.88},
                      "base": {"accuracy": 0.4, "macro_f1": 0.3}}
        emit("evaluated", **evaluation)
        (out / "metrics.json").write_text(json.dumps({
            "eval": evaluation, "train": {"loss": 0.5}, "datasets": {"train_examples": 18},
            "hyperparameters": config.hyperparameters(), "wall_time_s": 1.0}))
        emit("succeeded", adapter_dir=str(out / "adapter"))
        if self.checks:
            from training.jobs.entrypoint import CHECKS_FILE, run_checks

            argv = self.specs[job_id].entrypoint
            spec = json.loads(Path(argv[argv.index("--checks") + 1]).read_text())
            result = run_checks(config, out / "adapter", spec["champion"])
            (out / CHECKS_FILE).write_text(json.dumps(result))
        return RunStatus(RunState.SUCCEEDED)
