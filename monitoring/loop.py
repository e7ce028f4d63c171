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

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from monitoring import monitor_store as ms
from monitoring import observations as obs
from monitoring.candidate_eval import Evaluator, ScoringEvaluator
from monitoring.config import MonitorConfig
from monitoring.cycle import Cycle, WatchedAdapter
from monitoring.metrics import Metrics
from monitoring.monitor_store import EventType
from monitoring.observe import Observation, ObservationInputs, observe
from monitoring.policy import (
    Action,
    Decision,
    PolicyState,
    RetrainPolicy,
    drift_persists,
    should_retrain,
    should_rollback,
)
from monitoring.quality import Baseline, QualityReport
from monitoring.retrain import Retrainer
from services import registry
from services.hot_swap import ChampionSwitcher, HotSwap
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    RetrainRun,
    RetrainRunStatus,
    Tenant,
    TenantState,
    utcnow,
)
from training.jobs.store import as_utc

log = logging.getLogger("tuneloop.monitor")


class Monitor:
    """One monitor over the platform's store. Thread-compatible: one ``run_once`` at a time."""

    def __init__(self, platform: Platform, *, metrics: Metrics | None = None,
                 evaluator: Evaluator | None = None, switcher: ChampionSwitcher | None = None,
                 config: MonitorConfig | None = None,
                 on_job_created: Callable[[str], None] | None = None) -> None:
        self.platform = platform
        self.metrics = metrics or Metrics()
        self.evaluator = evaluator or ScoringEvaluator(platform)
        self.switcher = switcher or HotSwap(platform)
        self.config = config or MonitorConfig()
        self.retrainer = Retrainer(platform, metrics=self.metrics, evaluator=self.evaluator,
                                   switcher=self.switcher, config=self.config,
                                   version_data=self._version_data, event=self._event,
                                   on_job_created=on_job_created)
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
        self.retrainer.advance(tenant, adapter, policy, now, cycle)
        target = self._target(tenant, adapter, policy)
        if target is None:
            return
        cycle.champion = target.champion.version
        quality = self._observe(target, now, cycle)
        if self._maybe_rollback(target, quality, now, cycle):
            return
        decision = self._decide(target, quality, now, cycle)
        if decision.action is Action.RETRAIN:
            self.retrainer.start(target, decision.reason.value, now, cycle)

    def _target(self, tenant: Tenant, adapter: Adapter, policy: RetrainPolicy) -> WatchedAdapter | None:
        with self.platform.store.read() as session:
            adapter = session.get_one(Adapter, adapter.id)
            champion, since = obs.champion(session, adapter)
        if champion is None or since is None:  # since is set whenever champion is
            return None
        return WatchedAdapter(tenant, adapter, policy, champion, since)

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
               data: dict[str, Any] | None = None, dedupe: bool = False,
               same_data: tuple[str, ...] = ()) -> None:
        """Store an event; ``dedupe`` skips it when the adapter's last event of this type had
        the same action and reason, and the same values at the dotted ``same_data`` paths of
        its data (a decision repeated every pass on the same inputs is recorded once)."""
        with self.platform.store.write() as session:
            if dedupe:
                last = ms.list_events(session, adapter.id, limit=1, type_=type_)
                if last and last[0].action == action and last[0].reason == reason and all(
                        _at(last[0].data, path) == _at(data, path) for path in same_data):
                    return
            ms.add_event(session, adapter.id, type_, message, action=action, reason=reason,
                         data=data, now=now)

    # -- observe ----------------------------------------------------------------------------

    def _observe(self, target: WatchedAdapter, now: datetime, cycle: Cycle) -> QualityReport:
        """Read the inputs, :func:`monitoring.observe.observe`, set the metrics, store the report."""
        cfg, adapter, champion = self.config, target.adapter, target.champion
        with self.platform.store.read() as session:
            last = ms.last_window(session, adapter.id, champion.version)
            after = as_utc(last.window_end) if last and last.window_end else target.since
            fresh = obs.requests_after(session, adapter, after)
            # The first window waits for min_window inputs; later ones slide by window_step.
            test_window = fresh >= (cfg.min_window if last is None else cfg.window_step)
            window = obs.window(session, adapter, target.since, cfg.window_size) \
                if test_window else None
            counts = obs.quality_counts(session, adapter, champion.version, target.since,
                                        cfg.quality_window)
            previous = ms.list_reports(session, adapter.id, limit=1)
        ref_texts: list[str] = []
        ref_labels: list[str] = []
        predicted = None
        if window is not None:  # the reference is only read when there is a window to test
            ref_texts, ref_labels = obs.reference(self._version_data(champion))
            if champion.task == AdapterTask.CLASSIFICATION:
                predicted = obs.predicted_label_counts(champion)
        accuracy, negative = self._baselines(target)
        seen = previous[0] if previous else None
        observed = observe(ObservationInputs(
            adapter_id=adapter.id, champion_ref=registry.version_ref(adapter.name, champion.version),
            champion_version=champion.version, champion_task=champion.task, since=target.since,
            window=window, reference_texts=ref_texts, reference_labels=ref_labels,
            predicted=predicted, counts=counts, baseline_accuracy=accuracy,
            baseline_negative=negative, previous_version=seen.version if seen else None,
            previous_counts=(seen.quality or {}).get("counts") if seen else None), cfg)
        if window is not None:
            cycle.drifted = observed.drifted
            cycle.input_drift = observed.input_drift
            cycle.prediction_drift = observed.prediction_drift
        cycle.quality = observed.quality_summary
        self._set_observation_metrics(target, observed)
        if observed.store_report:
            report = observed.new_window or {}
            with self.platform.store.write() as session:
                ms.add_report(session, adapter.id, version=champion.version,
                              new_window=report.get("new_window", False),
                              drifted=report.get("drifted"), n_window=report.get("n_window", 0),
                              window_end=report.get("window_end"),
                              input_drift=report.get("input_drift"),
                              prediction_drift=report.get("prediction_drift"),
                              quality=cycle.quality, created_at=now)
        return observed.quality

    def _set_observation_metrics(self, target: WatchedAdapter, observed: Observation) -> None:
        tenant_label, adapter_label = self.metrics.labels_for(target.tenant.name,
                                                              target.adapter.name)
        for name, result in observed.drift_tests.items():
            if result.statistic is not None and result.p_value is not None:
                self.metrics.drift_statistic.labels(tenant_label, adapter_label, name).set(
                    result.statistic)
                self.metrics.drift_p_value.labels(tenant_label, adapter_label, name).set(
                    result.p_value)
        for name, check in observed.quality.checks.items():
            if check.value is not None:
                self.metrics.quality.labels(tenant_label, adapter_label, name).set(check.value)

    def _baselines(self, target: WatchedAdapter) -> tuple[Baseline | None, Baseline | None]:
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

    def _maybe_rollback(self, target: WatchedAdapter, quality: QualityReport, now: datetime,
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
            row = session.get_one(RetrainRun, run.id)
            row.status = RetrainRunStatus.ROLLED_BACK
            ms.add_event(session, adapter.id, EventType.ROLLBACK,
                         f"rolled {ref} back to v{restored}: {decision.message}",
                         action="rollback", reason=decision.reason.value,
                         data={**data, "to_version": restored}, now=now)
        cycle.actions.append(f"rolled_back:v{version}->v{restored}")
        return True

    # -- decide -----------------------------------------------------------------------------

    def _decide(self, target: WatchedAdapter, quality: QualityReport, now: datetime, cycle: Cycle
                ) -> Decision:
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
            "last_training_started_at": last_started.isoformat() if last_started else None,
            "champion_version": target.champion.version,
            "last_run": runs[0].id if runs else None}}
        # A retrain that started nothing (too little data) is decided again every pass on the
        # same inputs: recorded once until the inputs change.
        same = () if decision.action is not Action.RETRAIN else (
            "state.new_examples", "state.champion_version", "state.last_run")
        self._event(adapter, EventType.DECISION, decision.message, now=now,
                    action=decision.action.value, reason=decision.reason.value, data=data,
                    dedupe=True, same_data=same)
        return decision


def _at(data: dict[str, Any] | None, path: str) -> Any:
    """The value at dotted ``path`` of ``data`` (None where a step is missing)."""
    value: Any = data
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


class MonitorThread:
    """Runs ``monitor.run_once`` every ``interval_s`` in a background thread (first pass at once)."""

    def __init__(self, monitor: Monitor, interval_s: float = 60.0) -> None:
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
