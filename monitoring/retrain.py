"""Retraining for the monitor loop: compile a dataset from the request log and feedback (with
replay of the champion's training data), store it as files, start a fine-tuning job warm-started
from the champion; when the job finishes, evaluate candidate and champion on the new and the
previous eval split, gate, and promote (or wait for approval, reject, dry-run). The new split
is the job's validation file: where the job scored it already (on the engine, the way the gate
would), the gate takes those numbers and scores only the previous split.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from monitoring import monitor_store as ms
from monitoring import observations as obs
from monitoring.candidate_eval import Evaluator, VersionSpec, gate_samples
from monitoring.compiler import CompileConfig, compile_dataset
from monitoring.config import MonitorConfig
from monitoring.cycle import Cycle, WatchedAdapter
from monitoring.metrics import Metrics
from monitoring.monitor_store import EventType
from monitoring.policy import PromotionAction, RetrainPolicy, promotion_action
from services import registry
from services.artifact_gc import keep_stored
from services.hot_swap import ChampionSwitcher
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    DatasetFile,
    FineTuningJob,
    JobStatus,
    RetrainRun,
    RetrainRunStatus,
    Tenant,
)
from training.gate import decide_gate, gate_metric, label_kl


def _spec(tenant: Tenant, name: str, row: AdapterVersion) -> VersionSpec:
    return VersionSpec(tenant.name, name, row.version, row.task, row.labels, row.prompt_template,
                       row.artifact_key)


class Retrainer:
    """The monitor's hands: starts retrains and finishes them (gate, promote)."""

    def __init__(self, platform: Platform, *, metrics: Metrics, evaluator: Evaluator,
                 switcher: ChampionSwitcher, config: MonitorConfig,
                 version_data: Callable[[AdapterVersion], obs.VersionData],
                 event: Callable[..., None],
                 on_job_created: Callable[[str], None] | None = None) -> None:
        self.platform = platform
        self.metrics = metrics
        self.evaluator = evaluator
        self.switcher = switcher
        self.config = config
        self.version_data = version_data
        self.event = event
        self.on_job_created = on_job_created

    def _stored_file(self, tenant: Tenant, data: bytes, filename: str, task: str) -> DatasetFile:
        """The tenant's file with these bytes (stored once, like the files API would)."""
        from training.jobs.files import store_file

        digest = hashlib.sha256(data).hexdigest()
        with self.platform.store.read() as session:
            existing = session.scalar(select(DatasetFile).where(
                DatasetFile.tenant_id == tenant.id, DatasetFile.sha256 == digest,
                DatasetFile.task == task).limit(1))
        return existing or store_file(self.platform, tenant, data, filename, task=task)

    def start(self, target: WatchedAdapter, trigger: str, now: datetime, cycle: Cycle) -> None:
        from training.jobs.intake import JobRequest, create_job

        tenant, adapter, champion = target.tenant, target.adapter, target.champion
        cfg = self.config
        with self.platform.store.read() as session:
            requests, feedback = obs.compile_inputs(session, adapter)
        labels = tuple(champion.labels or ()) if champion.task == AdapterTask.CLASSIFICATION else None
        dataset = compile_dataset(
            AdapterTask(champion.task), requests, feedback,
            champion_examples=self.version_data(champion).train,
            config=CompileConfig(eval_fraction=cfg.eval_fraction,
                                 replay_fraction=_replay_fraction(target.policy, cfg),
                                 labels=labels,
                                 split_salt=f"{tenant.id}:{adapter.name}"))
        tenant_label, adapter_label = self.metrics.labels_for(tenant.name, adapter.name)
        self.metrics.dataset_examples.labels(tenant_label, adapter_label).set(
            len(dataset.train) + len(dataset.eval))
        summary = {"version": dataset.version, "counts": dataset.counts,
                   "train": len(dataset.train), "eval": len(dataset.eval)}
        if not dataset.train or not dataset.eval:
            self.event(adapter, EventType.DATASET,
                        f"dataset {dataset.version[:12]} has {len(dataset.train)} training and "
                        f"{len(dataset.eval)} eval examples; both are needed to train and gate a "
                        "candidate, so no job was started (more labeled feedback is needed)",
                        now=now, action="skip", reason="dataset_too_small", data=summary,
                        dedupe=True, same_data=("version",))
            return
        stem = f"{adapter.name}-{dataset.version[:12]}"
        train = self._stored_file(tenant, dataset.jsonl("train"), f"{stem}-train.jsonl",
                                  champion.task)
        valid = self._stored_file(tenant, dataset.jsonl("eval"), f"{stem}-eval.jsonl",
                                  champion.task)
        lineage = json.dumps(dataset.lineage()).encode("utf-8")
        summary["lineage_key"] = lineage_key = self.platform.artifacts.put_bytes(lineage)
        parent = registry.version_ref(adapter.name, champion.version)
        job = create_job(self.platform, tenant, JobRequest(model=parent, training_file=train.id,
                         validation_file=valid.id, suffix=adapter.name,
                         hyperparameters=cfg.hyperparameters, task=champion.task,
                         auto_promote=False, seed=int(dataset.version[:8], 16) % 2**31))
        with self.platform.store.write() as session:
            keep_stored(session, self.platform.artifacts, lineage_key,
                        lambda: self.platform.artifacts.put_bytes(lineage))
            run = ms.add_run(session, adapter_id=adapter.id, tenant_id=tenant.id,
                             status=str(RetrainRunStatus.TRAINING), trigger=trigger,
                             champion_version=champion.version, job_id=job.id,
                             dataset_version=dataset.version, dataset=summary,
                             training_file=train.id, validation_file=valid.id, created_at=now)
            ms.add_event(session, adapter.id, EventType.DATASET,
                         f"compiled dataset {dataset.version[:12]}: {len(dataset.train)} training "
                         f"({dataset.counts.get('replay', 0)} replayed from {parent}) and "
                         f"{len(dataset.eval)} eval examples; files {train.id}, {valid.id}",
                         action="compiled", reason=trigger, data=summary, now=now)
            ms.add_event(session, adapter.id, EventType.JOB,
                         f"started fine-tuning job {job.id}, warm start from {parent} "
                         f"(trigger: {trigger})", action="started", reason=trigger,
                         data={"job_id": job.id, "run": run.id}, now=now)
        cycle.actions.append(f"retrain:{job.id}")
        if self.on_job_created is not None:
            self.on_job_created(job.id)

    # -- finished jobs: gate and promote ---------------------------------------------------

    def advance(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy, now: datetime,
                cycle: Cycle) -> None:
        """Finish the adapter's retrains whose job ended: record failures, gate successes.
        A gate that raises (e.g. the engines are not up for the hot swap) is retried on the
        next pass: the run stays ``training`` until it is decided."""
        with self.platform.store.read() as session:
            open_runs = ms.list_runs(session, adapter.id, status=RetrainRunStatus.TRAINING,
                                     limit=100)
            jobs = {r.id: session.get(FineTuningJob, r.job_id) for r in open_runs}
        for run in open_runs:
            job = jobs[run.id]
            status = JobStatus(job.status) if job is not None else JobStatus.FAILED
            if not status.is_terminal:
                continue
            if status is not JobStatus.SUCCEEDED:
                self.metrics.retrain_jobs.labels(status.value).inc()
                self._finish_run(run, RetrainRunStatus.FAILED if status is JobStatus.FAILED
                                 else RetrainRunStatus.CANCELLED, now, EventType.JOB,
                                 f"fine-tuning job {run.job_id} {status.value}: "
                                 f"{(job.error or {}).get('message') if job else 'job missing'}",
                                 action=status.value, reason=status.value)
                cycle.actions.append(f"job_{status.value}:{run.job_id}")
                continue
            assert job is not None  # a missing job counts as FAILED above
            self._gate(tenant, adapter, policy, run, job, now, cycle)
            self.metrics.retrain_jobs.labels(status.value).inc()

    def _finish_run(self, run: RetrainRun, status: RetrainRunStatus, now: datetime, type_: str,
                    message: str, *, action: str, reason: str,
                    data: dict[str, Any] | None = None, **fields: Any) -> None:
        with self.platform.store.write() as session:
            row = session.get_one(RetrainRun, run.id)
            row.status = status
            row.finished_at = now
            for key, value in fields.items():
                setattr(row, key, value)
            ms.add_event(session, run.adapter_id, type_, message, action=action, reason=reason,
                         data={"run": run.id, "job_id": run.job_id, **(data or {})}, now=now)

    def _forgetting(self, candidate: VersionSpec, champion: VersionSpec,
                    previous: list[dict[str, Any]]) -> float | None:
        """Mean KL of the candidate's label distribution from the champion's on the champion's
        held-out texts (classification; None for chat or without such texts)."""
        reference = self.evaluator.label_distributions(champion, previous)
        moved = self.evaluator.label_distributions(candidate, previous)
        if not reference or not moved:
            return None
        return label_kl(reference, moved)

    def _gate(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy, run: RetrainRun,
              job: FineTuningJob, now: datetime, cycle: Cycle) -> None:
        with self.platform.store.read() as session:
            candidate = session.get_one(AdapterVersion, job.result_version_id)
            current = session.get_one(Adapter, adapter.id)
            champion = session.get_one(AdapterVersion, current.champion_version_id)
            new_split = obs.file_records(self.platform, session, run.validation_file,
                                         candidate.task) or []
        previous_split = self.version_data(champion).eval
        cand_ref = registry.version_ref(adapter.name, candidate.version)
        champ_ref = registry.version_ref(adapter.name, champion.version)
        splits = {"new": new_split, "previous": previous_split}
        metric, higher = gate_metric(candidate.task)
        cand_spec, champ_spec = (_spec(tenant, adapter.name, candidate),
                                 _spec(tenant, adapter.name, champion))
        began = time.perf_counter()
        reused = job_scores(candidate, champ_ref, new_split, self.evaluator.scorer(candidate.task))
        if reused is None:
            cand_metrics = self.evaluator.evaluate(cand_spec, splits)
            champ_metrics = self.evaluator.evaluate(champ_spec, splits)
        else:  # the job scored the new split already, the same way: only the previous one here
            rest = {"previous": previous_split}
            cand_metrics = {"new": reused[0], **self.evaluator.evaluate(cand_spec, rest)}
            champ_metrics = {"new": reused[1], **self.evaluator.evaluate(champ_spec, rest)}
        forgetting = self._forgetting(cand_spec, champ_spec, previous_split)
        # Chat: the first held-out prompts with the reference and both replies, side by side
        # (takes the replies out of the per-split metrics, so they are stored once).
        samples = gate_samples(new_split, cand_metrics, champ_metrics)
        evaluation = {f"v{candidate.version}": cand_metrics, f"v{champion.version}": champ_metrics,
                      "samples": samples,
                      "metric": metric, "split_sizes": {k: len(v) for k, v in splits.items()},
                      "scorer": self.evaluator.scorer(candidate.task),
                      "forgetting_kl": forgetting, "new_split_from_job": reused is not None,
                      "seconds": round(time.perf_counter() - began, 3)}
        gate = decide_gate(cand_metrics, champ_metrics, "new", metric=metric,
                           higher_is_better=higher, champion_version=champ_ref,
                           previous_split="previous" if previous_split else None,
                           tolerance=policy.gate_tolerance,
                           min_improvement=policy.gate_min_improvement,
                           forgetting=forgetting, max_forgetting=policy.gate_max_forgetting_kl)
        self.metrics.gate_decisions.labels(gate.reason.value).inc()
        action = promotion_action(policy, gate)
        data = {"gate": gate.to_dict(), "evaluation": evaluation, "action": action.value}
        with self.platform.store.write() as session:
            ms.add_event(session, adapter.id, EventType.GATE,
                         f"{cand_ref} vs {champ_ref}: {'passed' if gate.passed else 'failed'} "
                         f"({gate.message})", action="passed" if gate.passed else "failed",
                         reason=gate.reason.value, data=data, now=now)
        fields = {"candidate_version": candidate.version, "evaluation": evaluation,
                  "gate": gate.to_dict()}
        if action is PromotionAction.PROMOTE:
            new_value = cand_metrics.get("new", {})
            baseline = {}
            if "accuracy" in new_value:
                baseline["accuracy"] = {"value": new_value["accuracy"],
                                        "n": int(new_value.get("examples") or 0) or None}
            self.switcher.promote(tenant, adapter.name, candidate.version,
                                  f"monitor: gate passed vs {champ_ref} ({gate.message})")
            self.metrics.promotions.labels("promote").inc()
            self._finish_run(run, RetrainRunStatus.PROMOTED, now, EventType.PROMOTION,
                             f"promoted {cand_ref} (was {champ_ref}); watching it for "
                             f"{self.config.rollback_watch_hours:g} h", action="promote",
                             reason=gate.reason.value, data=data, baseline=baseline,
                             promoted_at=now, **fields)
            cycle.actions.append(f"promoted:v{candidate.version}")
            return
        status, message = {
            PromotionAction.AWAIT_APPROVAL: (
                RetrainRunStatus.AWAITING_APPROVAL,
                (f"{cand_ref} passed the gate and waits for approval: POST "
                 f"/v1/adapters/{adapter.name}/promote {{\"version\": {candidate.version}}}")),
            PromotionAction.DRY_RUN: (RetrainRunStatus.DRY_RUN,
                                      f"dry run: would promote {cand_ref} over {champ_ref}"),
            PromotionAction.REJECT: (RetrainRunStatus.REJECTED,
                                     f"rejected {cand_ref}: {gate.message}; {champ_ref} stays"),
        }[action]
        if action is not PromotionAction.AWAIT_APPROVAL:  # never served: free the engines
            self.evaluator.release(cand_spec)
        self._finish_run(run, status, now, EventType.PROMOTION, message, action=action.value,
                         reason=gate.reason.value, data=data, **fields)
        cycle.actions.append(f"{action.value}:v{candidate.version}")


def _replay_fraction(policy: RetrainPolicy, config: MonitorConfig) -> float:
    """The policy's replay share when it sets one, else the monitor's default."""
    return config.replay_fraction if policy.replay_fraction is None else policy.replay_fraction


GATE_KEYS = ("accuracy", "macro_f1", "examples")


def job_scores(candidate: AdapterVersion, champion_ref: str, new_split: list[dict[str, Any]],
               scorer: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The candidate's and the champion's metrics on the new split from the retrain job's own
    evaluation, when that job scored exactly this split (its validation file; every example)
    against this champion with the gate's scorer (:mod:`training.jobs.engine_scoring`); else
    None and the gate scores the split itself."""
    metrics = candidate.metrics or {}
    evaluation = metrics.get("eval") or {}
    mine, theirs = evaluation.get("adapter") or {}, evaluation.get("champion") or {}
    if (candidate.task != AdapterTask.CLASSIFICATION or not new_split
            or (metrics.get("comparison") or {}).get("champion_version") != champion_ref
            or theirs.get("version") != champion_ref):
        return None
    for scored in (mine, theirs):
        if scored.get("scorer") != scorer or scored.get("examples") != len(new_split) or any(
                key not in scored for key in GATE_KEYS):
            return None
    return ({k: mine[k] for k in GATE_KEYS}, {k: theirs[k] for k in GATE_KEYS})
