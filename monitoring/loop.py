"""The monitor loop: for every adapter with a retrain policy, test drift and quality, decide, and
act: compile a dataset from feedback, train a candidate warm-started from the champion, gate it,
promote it (hot swap when serving runs in this process), and roll a promoted champion back when
its fresh feedback is significantly worse.

``Monitor.run_once(now)`` is one pass over all adapters; every decision is stored as a monitor
event with its reason and counted in the metric catalog. The decisions themselves are the pure
functions of :mod:`monitoring.policy`, :mod:`monitoring.drift`, :mod:`monitoring.quality` and
:mod:`monitoring.compiler`; this module gathers their inputs and carries out their answers.
``MonitorThread`` runs passes periodically (``tuneloop monitor``, ``tuneloop serve``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from monitoring import monitor_store as ms
from monitoring import observations as obs
from monitoring.candidate_eval import Evaluator, ScoringEvaluator, VersionSpec, gate_metric
from monitoring.compiler import CompileConfig, compile_dataset
from monitoring.drift import DriftStatus, input_drift, prediction_drift
from monitoring.metrics import Metrics
from monitoring.monitor_store import EventType
from monitoring.policy import (
    Action,
    PolicyState,
    PromotionAction,
    RetrainPolicy,
    drift_persists,
    gate_candidate,
    promotion_action,
    should_retrain,
    should_rollback,
)
from monitoring.quality import Baseline, QualityReport, quality_report
from services import registry
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterVersion,
    DatasetFile,
    FineTuningJob,
    RetrainRun,
    RetrainRunStatus,
    Tenant,
    TenantState,
    utcnow,
)
from training.jobs.states import JobStatus
from training.jobs.store import as_utc

log = logging.getLogger("tuneloop.monitor")


@dataclass(frozen=True)
class MonitorConfig:
    """How the monitor samples, tests and trains (the policy says *when*; this says *how*)."""

    window_size: int = 200
    """Production inputs in one drift window (the newest ones served by the champion)."""
    window_step: int = 50
    """New inputs needed before the next window is tested (windows slide by at least this)."""
    min_window: int = 50
    """Below this many window inputs a drift test reports insufficient data."""
    min_reference: int = 50
    """Below this many reference (training) inputs a drift test reports insufficient data."""
    drift_threshold: float = 0.01
    """p-value under which a window counts as drifted."""
    n_permutations: int = 500
    """Permutations of the input drift test."""
    quality_window: int = 1000
    """Newest feedback records of the champion used for its quality."""
    quality_min_labels: int = 30
    quality_min_ratings: int = 30
    quality_threshold: float = 0.01
    """p-value under which a quality drop counts (retrain trigger, rollback)."""
    rollback_watch_hours: float = 24.0
    """How long after a monitor promotion the new champion may be rolled back automatically."""
    eval_fraction: float = 0.2
    """Share of feedback examples held out as the new eval split (for the gate)."""
    replay_fraction: float = 0.2
    """Share of the champion's training data replayed into the new training set."""
    hyperparameters: dict[str, Any] | None = None
    """Fine-tuning job hyperparameters (None: the jobs API's "auto" defaults)."""


class ChampionSwitcher(Protocol):
    """Changes an adapter's champion (the registry alone, or with the gateway's hot swap)."""

    def promote(self, tenant: Tenant, name: str, version: int, reason: str) -> None: ...

    def rollback(self, tenant: Tenant, name: str, reason: str) -> int: ...


class RegistrySwitcher:
    """Switches champions in the store; gateways pick the change up within their cache TTL."""

    def __init__(self, platform: Platform):
        self.platform = platform

    def promote(self, tenant: Tenant, name: str, version: int, reason: str) -> None:
        with self.platform.store.write() as session:
            registry.promote(session, tenant, name, version, reason)

    def rollback(self, tenant: Tenant, name: str, reason: str) -> int:
        with self.platform.store.write() as session:
            return registry.rollback(session, tenant, name, reason).version


@dataclass
class Cycle:
    """What one pass did for one adapter (returned by ``run_once``; the store has the details)."""

    tenant: str
    adapter: str
    champion: int | None = None
    drifted: bool | None = None
    input_drift: dict[str, Any] | None = None
    prediction_drift: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    actions: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class _Target:
    tenant: Tenant
    adapter: Adapter
    policy: RetrainPolicy
    champion: AdapterVersion
    since: datetime


def _spec(name: str, row: AdapterVersion) -> VersionSpec:
    return VersionSpec(name, row.version, row.task, row.labels, row.prompt_template,
                       row.artifact_key)


class Monitor:
    """One monitor over the platform's store. Thread-compatible: one ``run_once`` at a time."""

    def __init__(self, platform: Platform, *, metrics: Metrics | None = None,
                 evaluator: Evaluator | None = None, switcher: ChampionSwitcher | None = None,
                 config: MonitorConfig | None = None,
                 on_job_created: Callable[[str], None] | None = None):
        self.platform = platform
        self.metrics = metrics or Metrics()
        self.evaluator = evaluator or ScoringEvaluator(platform)
        self.switcher = switcher or RegistrySwitcher(platform)
        self.config = config or MonitorConfig()
        self.on_job_created = on_job_created
        self._data_cache: dict[int, obs.VersionData] = {}
        self._lock = threading.Lock()

    # -- the pass ---------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> list[Cycle]:
        """One pass over every adapter with a policy; a failing adapter does not stop the rest."""
        now = as_utc(now) or utcnow()
        started = time.perf_counter()
        with self._lock:
            with self.platform.store.read() as session:
                watched = ms.watched_adapters(session)
            results = []
            for tenant, adapter, policy in watched:
                if tenant.state != TenantState.ACTIVE:
                    continue
                results.append(self._guarded(tenant, adapter, policy, now))
        self.metrics.monitor_cycle_seconds.observe(time.perf_counter() - started)
        return results

    def _guarded(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy, now: datetime
                 ) -> Cycle:
        cycle = Cycle(tenant.name, adapter.name)
        try:
            self.cycle(tenant, adapter, policy, now, cycle)
            self.metrics.monitor_cycles.labels("ok").inc()
        except Exception as exc:
            log.exception("monitor pass failed for %s/%s", tenant.name, adapter.name)
            self.metrics.monitor_cycles.labels("error").inc()
            cycle.error = f"{type(exc).__name__}: {exc}"
            self._event(adapter, EventType.ERROR, f"monitor pass failed: {cycle.error}; the next "
                        "pass retries (see the monitor log)", now=now, action="error",
                        reason=type(exc).__name__, dedupe=True)
        return cycle

    def cycle(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy, now: datetime,
              cycle: Cycle) -> None:
        """Finished jobs -> gate/promote; observe drift and quality; rollback; decide; retrain."""
        self._advance_runs(tenant, adapter, policy, now, cycle)
        target = self._target(tenant, adapter, policy)
        if target is None:
            return
        cycle.champion = target.champion.version
        quality = self._observe(target, now, cycle)
        if self._maybe_rollback(target, quality, now, cycle):
            return
        decision = self._decide(target, quality, now, cycle)
        if decision.action is Action.RETRAIN:
            self._start_retrain(target, decision.reason.value, now, cycle)

    def _target(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy) -> _Target | None:
        with self.platform.store.read() as session:
            adapter = session.get(Adapter, adapter.id)
            champion, since = obs.champion(session, adapter)
        if champion is None:
            return None
        return _Target(tenant, adapter, policy, champion, since)

    def _version_data(self, row: AdapterVersion) -> obs.VersionData:
        cached = self._data_cache.get(row.id)  # versions are immutable
        if cached is None:
            with self.platform.store.read() as session:
                cached = obs.version_data(self.platform, session, row)
            if len(self._data_cache) > 64:
                self._data_cache.clear()
            self._data_cache[row.id] = cached
        return cached

    def _event(self, adapter: Adapter, type_: str, message: str, *, now: datetime,
               action: str | None = None, reason: str | None = None,
               data: dict[str, Any] | None = None, dedupe: bool = False) -> None:
        """Store an event; ``dedupe`` skips it when the adapter's last event of this type had
        the same action and reason (a decision repeated every pass is recorded once)."""
        with self.platform.store.write() as session:
            if dedupe:
                last = ms.list_events(session, adapter.id, limit=1, type_=type_)
                if last and last[0].action == action and last[0].reason == reason:
                    return
            ms.add_event(session, adapter.id, type_, message, action=action, reason=reason,
                         data=data, now=now)

    # -- observe ----------------------------------------------------------------------------

    def _observe(self, target: _Target, now: datetime, cycle: Cycle) -> QualityReport:
        cfg, adapter, champion = self.config, target.adapter, target.champion
        tenant_label, adapter_label = self.metrics.labels_for(target.tenant.name, adapter.name)
        with self.platform.store.read() as session:
            last = ms.last_window(session, adapter.id, champion.version)
            after = as_utc(last.window_end) if last and last.window_end else target.since
            fresh = obs.requests_after(session, adapter, after)
            test_window = last is None or fresh >= cfg.window_step
            window = obs.window(session, adapter, target.since, cfg.window_size) \
                if test_window else None
            counts = obs.quality_counts(session, adapter, champion.version, target.since,
                                        cfg.quality_window)
            previous = ms.list_reports(session, adapter.id, limit=1)
        report: dict[str, Any] = {}
        if window is not None:
            ref_texts, ref_labels = obs.reference(self._version_data(champion))
            seed = zlib.crc32(f"{adapter.id}:{champion.version}:{window.newest}".encode())
            drift = input_drift(ref_texts, window.texts, threshold=cfg.drift_threshold,
                                n_permutations=cfg.n_permutations,
                                min_reference=cfg.min_reference, min_window=cfg.min_window,
                                seed=seed)
            tests = {"input": drift}
            if champion.task == "classification":
                tests["prediction"] = prediction_drift(
                    ref_labels, window.labels, threshold=cfg.drift_threshold,
                    min_reference=cfg.min_reference, min_window=cfg.min_window)
            evaluated = [r for r in tests.values() if r.status is not DriftStatus.INSUFFICIENT_DATA]
            cycle.drifted = any(r.drifted for r in evaluated) if evaluated else None
            for name, result in tests.items():
                if result.statistic is not None:
                    self.metrics.drift_statistic.labels(tenant_label, adapter_label, name).set(
                        result.statistic)
                    self.metrics.drift_p_value.labels(tenant_label, adapter_label, name).set(
                        result.p_value)
            cycle.input_drift = drift.to_dict()
            if not ref_texts:
                cycle.input_drift["details"]["reference"] = (
                    f"{registry.version_ref(adapter.name, champion.version)} has no training file in its lineage, so there is no reference; versions "
                    "trained through tuneloop have one")
            cycle.prediction_drift = tests["prediction"].to_dict() if "prediction" in tests \
                else None
            report = {"new_window": True, "drifted": cycle.drifted, "n_window": len(window.texts),
                      "window_end": window.newest or target.since,
                      "input_drift": cycle.input_drift,
                      "prediction_drift": cycle.prediction_drift}
        accuracy, negative = self._baselines(target)
        quality = quality_report(
            correct=counts.correct, labeled=counts.labeled, negative=counts.negative,
            rated=counts.rated, baseline_accuracy=accuracy, baseline_negative_rate=negative,
            threshold=cfg.quality_threshold, min_labels=cfg.quality_min_labels,
            min_ratings=cfg.quality_min_ratings)
        cycle.quality = {**quality.to_dict(), "counts": {
            "correct": counts.correct, "labeled": counts.labeled, "negative": counts.negative,
            "rated": counts.rated}}
        for name, check in quality.checks.items():
            if check.value is not None:
                self.metrics.quality.labels(tenant_label, adapter_label, name).set(check.value)
        unchanged = (previous and previous[0].version == champion.version
                     and (previous[0].quality or {}).get("counts") == cycle.quality["counts"])
        if report or not unchanged:
            with self.platform.store.write() as session:
                ms.add_report(session, adapter.id, version=champion.version,
                              new_window=report.get("new_window", False),
                              drifted=report.get("drifted"), n_window=report.get("n_window", 0),
                              window_end=report.get("window_end"),
                              input_drift=report.get("input_drift"),
                              prediction_drift=report.get("prediction_drift"),
                              quality=cycle.quality, created_at=now)
        return quality

    def _baselines(self, target: _Target) -> tuple[Baseline | None, Baseline | None]:
        """Quality when the champion was promoted: stored by the monitor's promotion, else the
        champion's own held-out accuracy from its training job."""
        with self.platform.store.read() as session:
            run = ms.promoted_run(session, target.adapter.id, target.champion.version)
        stored = (run.baseline or {}) if run is not None else {}
        if not stored:
            held_out = ((target.champion.metrics or {}).get("eval") or {}).get("adapter") or {}
            if held_out.get("accuracy") is not None:
                n = held_out.get("examples")
                stored = {"accuracy": {"value": held_out["accuracy"],
                                       "n": int(n) if n else None}}

        def make(key: str) -> Baseline | None:
            value = stored.get(key)
            return Baseline(float(value["value"]), value.get("n") or None) if value else None

        return make("accuracy"), make("negative_rate")

    # -- rollback ---------------------------------------------------------------------------

    def _maybe_rollback(self, target: _Target, quality: QualityReport, now: datetime,
                        cycle: Cycle) -> bool:
        """Roll back a champion the monitor promoted recently if its quality dropped."""
        adapter, version = target.adapter, target.champion.version
        with self.platform.store.read() as session:
            run = ms.promoted_run(session, adapter.id, version)
        if run is None or run.promoted_at is None:
            return False
        age_h = (now - as_utc(run.promoted_at)).total_seconds() / 3600
        if age_h > self.config.rollback_watch_hours:
            return False
        decision = should_rollback(target.policy, quality, has_previous_version=True)
        if not quality.degraded:
            return False
        data = {"decision": decision.to_dict(), "quality": cycle.quality, "run": run.id}
        if not decision.rollback:
            self._event(adapter, EventType.ROLLBACK, decision.message, now=now, action="skip",
                        reason=decision.reason.value, data=data, dedupe=True)
            return False
        ref = registry.version_ref(adapter.name, version)
        restored = self.switcher.rollback(target.tenant, adapter.name,
                                          f"monitor: {decision.message}")
        self.metrics.promotions.labels("rollback").inc()
        with self.platform.store.write() as session:
            row = session.get(RetrainRun, run.id)
            row.status = str(RetrainRunStatus.ROLLED_BACK)
            ms.add_event(session, adapter.id, EventType.ROLLBACK,
                         f"rolled {ref} back to v{restored}: {decision.message}",
                         action="rollback", reason=decision.reason.value,
                         data={**data, "to_version": restored}, now=now)
        cycle.actions.append(f"rolled_back:v{version}->v{restored}")
        return True

    # -- decide -----------------------------------------------------------------------------

    def _decide(self, target: _Target, quality: QualityReport, now: datetime, cycle: Cycle):
        policy, adapter = target.policy, target.adapter
        with self.platform.store.read() as session:
            history = ms.drift_history(session, adapter.id, target.champion.version,
                                       policy.drift_windows_n)
            last_started = ms.last_training_started(session, adapter)
            runs = ms.list_runs(session, adapter.id, limit=1)
            cutoff = max([as_utc(target.champion.created_at)]
                         + [as_utc(r.created_at) for r in runs])
            fresh = obs.new_examples(session, adapter, cutoff)
            adapter_running, tenant_jobs, total_jobs = ms.active_jobs(session, adapter)
        state = PolicyState(
            last_training_started_at=last_started, reference_time=as_utc(adapter.created_at),
            drift_history=tuple(history), new_examples=fresh, quality_degraded=quality.degraded,
            adapter_job_running=adapter_running, tenant_running_jobs=tenant_jobs,
            total_running_jobs=total_jobs)
        decision = should_retrain(policy, state, now)
        persists = drift_persists(history, policy.drift_windows_m, policy.drift_windows_n)[0]
        self.metrics.drift_alarm.labels(*self.metrics.labels_for(target.tenant.name,
                                                                 adapter.name)).set(int(persists))
        self.metrics.policy_decisions.labels(decision.action.value).inc()
        cycle.decision = decision.to_dict()
        data = {**decision.to_dict(), "state": {
            "drift_history": list(history), "new_examples": fresh,
            "quality_degraded": quality.degraded, "adapter_job_running": adapter_running,
            "tenant_running_jobs": tenant_jobs, "total_running_jobs": total_jobs,
            "last_training_started_at": last_started.isoformat() if last_started else None}}
        self._event(adapter, EventType.DECISION, decision.message, now=now,
                    action=decision.action.value, reason=decision.reason.value, data=data,
                    dedupe=decision.action is not Action.RETRAIN)
        return decision

    # -- retrain ----------------------------------------------------------------------------

    def _stored_file(self, tenant: Tenant, data: bytes, filename: str, task: str) -> DatasetFile:
        """The tenant's file with these bytes (stored once, like the files API would)."""
        import hashlib

        from sqlalchemy import select

        from training.jobs.files import store_file

        digest = hashlib.sha256(data).hexdigest()
        with self.platform.store.read() as session:
            existing = session.scalar(select(DatasetFile).where(
                DatasetFile.tenant_id == tenant.id, DatasetFile.sha256 == digest,
                DatasetFile.task == task).limit(1))
        return existing or store_file(self.platform, tenant, data, filename, task=task)

    def _start_retrain(self, target: _Target, trigger: str, now: datetime, cycle: Cycle) -> None:
        from training.jobs.intake import create_job

        tenant, adapter, champion = target.tenant, target.adapter, target.champion
        cfg = self.config
        with self.platform.store.read() as session:
            requests, feedback = obs.compile_inputs(session, adapter)
        labels = tuple(champion.labels) if champion.task == "classification" else None
        dataset = compile_dataset(
            champion.task, requests, feedback,
            champion_examples=self._version_data(champion).train,
            config=CompileConfig(eval_fraction=cfg.eval_fraction,
                                 replay_fraction=cfg.replay_fraction, labels=labels,
                                 split_salt=f"{tenant.id}:{adapter.name}"))
        tenant_label, adapter_label = self.metrics.labels_for(tenant.name, adapter.name)
        self.metrics.dataset_examples.labels(tenant_label, adapter_label).set(
            len(dataset.train) + len(dataset.eval))
        summary = {"version": dataset.version, "counts": dataset.counts,
                   "train": len(dataset.train), "eval": len(dataset.eval)}
        if not dataset.train or not dataset.eval:
            self._event(adapter, EventType.DATASET,
                        f"dataset {dataset.version[:12]} has {len(dataset.train)} training and "
                        f"{len(dataset.eval)} eval examples; both are needed to train and gate a "
                        "candidate, so no job was started (more labeled feedback is needed)",
                        now=now, action="skip", reason="dataset_too_small", data=summary)
            return
        stem = f"{adapter.name}-{dataset.version[:12]}"
        train = self._stored_file(tenant, dataset.jsonl("train"), f"{stem}-train.jsonl",
                                  champion.task)
        valid = self._stored_file(tenant, dataset.jsonl("eval"), f"{stem}-eval.jsonl",
                                  champion.task)
        summary["lineage_key"] = self.platform.artifacts.put_bytes(
            json.dumps(dataset.lineage()).encode("utf-8"))
        parent = registry.version_ref(adapter.name, champion.version)
        job = create_job(self.platform, tenant, model=parent, training_file=train.id,
                         validation_file=valid.id, suffix=adapter.name,
                         hyperparameters=cfg.hyperparameters, task=champion.task,
                         auto_promote=False, seed=int(dataset.version[:8], 16) % 2**31)
        with self.platform.store.write() as session:
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

    def _advance_runs(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy,
                      now: datetime, cycle: Cycle) -> None:
        with self.platform.store.read() as session:
            open_runs = ms.list_runs(session, adapter.id, status=RetrainRunStatus.TRAINING,
                                     limit=100)
            jobs = {r.id: session.get(FineTuningJob, r.job_id) for r in open_runs}
        for run in open_runs:
            job = jobs[run.id]
            status = JobStatus(job.status) if job is not None else JobStatus.FAILED
            if not status.is_terminal:
                continue
            self.metrics.retrain_jobs.labels(status.value).inc()
            if status is not JobStatus.SUCCEEDED:
                self._finish_run(run, RetrainRunStatus.FAILED if status is JobStatus.FAILED
                                 else RetrainRunStatus.CANCELLED, now, EventType.JOB,
                                 f"fine-tuning job {run.job_id} {status.value}: "
                                 f"{(job.error or {}).get('message') if job else 'job missing'}",
                                 action=status.value, reason=status.value)
                cycle.actions.append(f"job_{status.value}:{run.job_id}")
                continue
            self._gate(tenant, adapter, policy, run, job, now, cycle)

    def _finish_run(self, run: RetrainRun, status: RetrainRunStatus, now: datetime, type_: str,
                    message: str, *, action: str, reason: str,
                    data: dict[str, Any] | None = None, **fields: Any) -> None:
        with self.platform.store.write() as session:
            row = session.get(RetrainRun, run.id)
            row.status = str(status)
            row.finished_at = now
            for key, value in fields.items():
                setattr(row, key, value)
            ms.add_event(session, run.adapter_id, type_, message, action=action, reason=reason,
                         data={"run": run.id, "job_id": run.job_id, **(data or {})}, now=now)

    def _gate(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy, run: RetrainRun,
              job: FineTuningJob, now: datetime, cycle: Cycle) -> None:
        with self.platform.store.read() as session:
            candidate = session.get(AdapterVersion, job.result_version_id)
            current = session.get(Adapter, adapter.id)
            champion = session.get(AdapterVersion, current.champion_version_id)
            new_split = obs.file_records(self.platform, session, run.validation_file,
                                         candidate.task) or []
        previous_split = self._version_data(champion).eval
        splits = {"new": new_split, "previous": previous_split}
        metric = gate_metric(candidate.task)
        cand_metrics = self.evaluator.evaluate(_spec(adapter.name, candidate), splits)
        champ_metrics = self.evaluator.evaluate(_spec(adapter.name, champion), splits)
        evaluation = {f"v{candidate.version}": cand_metrics, f"v{champion.version}": champ_metrics,
                      "metric": metric, "split_sizes": {k: len(v) for k, v in splits.items()}}
        gate = gate_candidate(cand_metrics, champ_metrics, "new",
                              "previous" if previous_split else None, policy.gate_tolerance,
                              metric=metric, min_improvement=policy.gate_min_improvement)
        self.metrics.gate_decisions.labels(gate.reason.value).inc()
        action = promotion_action(policy, gate)
        cand_ref = registry.version_ref(adapter.name, candidate.version)
        champ_ref = registry.version_ref(adapter.name, champion.version)
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
        self._finish_run(run, status, now, EventType.PROMOTION, message, action=action.value,
                         reason=gate.reason.value, data=data, **fields)
        cycle.actions.append(f"{action.value}:v{candidate.version}")


class MonitorThread:
    """Runs ``monitor.run_once`` every ``interval_s`` in a background thread (first pass at once)."""

    def __init__(self, monitor: Monitor, interval_s: float = 60.0):
        self.monitor = monitor
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tuneloop-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.monitor.run_once()
            except Exception:
                log.exception("monitor pass failed")
            self._stop.wait(self.interval_s)
