"""The monitor loop's orchestration on SQLite and PostgreSQL, with a scripted training runner (no
Ray) and a scripted evaluator: drift -> policy -> dataset -> job -> gate -> promote; dry run;
cooldown; approval; rollback on fresh labeled feedback. Real texts from tuneloop/data/vader_sentiment:
v1 is trained on tweets and movie reviews; the traffic shifts to editorials and product reviews.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from monitoring import monitor_store as ms
from monitoring.config import MonitorConfig
from monitoring.loop import Monitor
from monitoring.metrics import Metrics
from monitoring.policy import RetrainPolicy
from services import registry
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterVersion,
    ChampionChange,
    DatasetFile,
    FeedbackRecord,
    FineTuningJob,
    JobStatus,
    RequestRecord,
    RetrainRun,
    Tenant,
    utcnow,
)
from services.tenants import create_tenant
from tests.support.scripted_runner import ScriptedRunner
from tests.support.vader import NEW, OLD
from training.jobs.files import file_bytes, store_file
from training.jobs.intake import JobRequest, create_job
from training.jobs.manager import JobManager

CONFIG = MonitorConfig(window_size=100, window_step=50, min_window=50, min_reference=50,
                       n_permutations=200, quality_min_labels=30, hyperparameters={"n_epochs": 1})
EAGER = RetrainPolicy(drift_windows_m=1, drift_windows_n=1, min_new_labels=None)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                   for r in rows).encode()


class ScriptedEvaluator:
    """Accuracy per version and split: ``scores[version][split]``; records every call."""

    def __init__(self, scores: dict[int, dict[str, float]],
                 distributions: dict[int, dict[str, float]] | None = None):
        self.scores = scores
        self.distributions = distributions or {}  # one label distribution per version
        self.calls: list[tuple[int, dict[str, int]]] = []
        self.released: list[str] = []

    def label_distributions(self, spec, records):
        found = self.distributions.get(spec.version)
        return None if found is None else [found] * len(records)

    def release(self, spec):
        self.released.append(spec.ref)

    def scorer(self, task):
        return "scripted"

    def evaluate(self, spec, splits):
        self.calls.append((spec.version, {k: len(v) for k, v in splits.items()}))
        return {k: {"accuracy": self.scores[spec.version][k], "examples": len(v)}
                for k, v in splits.items() if v}


@dataclass
class World:
    platform: Platform
    tenant: Tenant
    manager: JobManager
    t0: object  # v1's creation time, 12 hours ago: the test's clock starts there

    def adapter(self) -> Adapter:
        with self.platform.store.read() as session:
            return registry.get_adapter(session, self.tenant, "sentiment")

    def champion(self) -> int:
        with self.platform.store.read() as session:
            return registry.resolve(session, self.tenant, "sentiment").version

    def events(self, type_: str | None = None) -> list:
        with self.platform.store.read() as session:
            return list(reversed(ms.list_events(session, self.adapter().id, limit=1000,
                                                type_=type_)))

    def runs(self) -> list[RetrainRun]:
        with self.platform.store.read() as session:
            return ms.list_runs(session, self.adapter().id)

    def serve(self, rows: list[dict], version: int, start, predict=None) -> list[str]:
        """Log classify responses of ``version`` at one-second steps from ``start``."""
        ids = []
        with self.platform.store.write() as session:
            for i, row in enumerate(rows):
                rid = f"clf-{uuid.uuid4().hex}"
                session.add(RequestRecord(
                    id=rid, tenant_id=self.tenant.id, adapter="sentiment",
                    adapter_version=version, route="classify", status=200, input=row["text"],
                    output=predict(row) if predict else row["label"],
                    created_at=start + timedelta(seconds=i)))
                ids.append(rid)
        return ids

    def label(self, ids: list[str], rows: list[dict], version: int, at) -> None:
        """Ground-truth label feedback on responses, at one-second steps from ``at``."""
        with self.platform.store.write() as session:
            for i, (rid, row) in enumerate(zip(ids, rows)):
                session.add(FeedbackRecord(
                    id=f"t{self.tenant.id}:{uuid.uuid4().hex}", tenant_id=self.tenant.id,
                    response_id=rid, adapter="sentiment", adapter_version=version,
                    label=row["label"], created_at=at + timedelta(seconds=i)))

    def set_policy(self, policy: RetrainPolicy) -> None:
        with self.platform.store.write() as session:
            ms.put_policy(session, self.adapter(), policy)

    def run_job(self, job_id: str) -> JobStatus:
        return self.manager.run_job(job_id)


@pytest.fixture
def world(database_url, make_settings, peft_adapter):
    platform = Platform.open(make_settings(database_url=database_url))
    with platform.store.write() as session:
        tenant = create_tenant(session, "acme")
    train = store_file(platform, tenant, jsonl(OLD[:120]), "v1-train.jsonl")
    valid = store_file(platform, tenant, jsonl(OLD[120:150]), "v1-valid.jsonl")
    manager = JobManager(platform, runner=ScriptedRunner(peft_adapter, steps=1), poll_s=0.0)
    job = create_job(platform, tenant, JobRequest(model="base", training_file=train.id,
                     validation_file=valid.id, suffix="sentiment",
                     hyperparameters={"n_epochs": 1}))
    assert manager.run_job(job.id) is JobStatus.SUCCEEDED
    # Move v1's history 12 hours back so the test's clock (t0 + hours) can run ahead of it.
    t0 = utcnow() - timedelta(hours=12)
    with platform.store.write() as session:
        for model in (FineTuningJob, AdapterVersion, ChampionChange, Adapter):
            session.execute(update(model).values(created_at=t0))
    yield World(platform, tenant, manager, t0)
    platform.close()


def monitor(world: World, evaluator: ScriptedEvaluator, **kwargs) -> Monitor:
    return Monitor(world.platform, metrics=Metrics(), evaluator=evaluator, config=CONFIG, **kwargs)


def shifted_traffic(world: World, n: int = 100, labeled: int = 80) -> list[str]:
    """Editorials and product reviews served by v1 (7 h after t0, past the default 6 h cooldown
    since v1's training), most of them labeled. v1 answers "positive" to everything."""
    start = world.t0 + timedelta(hours=7)
    ids = world.serve(NEW[:n], 1, start, predict=lambda r: "positive")
    world.label(ids[:labeled], NEW[:labeled], 1, start + timedelta(minutes=30))
    return ids


def metric(m: Metrics, name: str, **labels) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def promote_v2(world: World, evaluator: ScriptedEvaluator) -> tuple[Monitor, object]:
    world.set_policy(EAGER)
    shifted_traffic(world)
    mon = monitor(world, evaluator)
    now = world.t0 + timedelta(hours=8)
    first = mon.run_once(now)[0]
    assert first.drifted is True and first.decision["action"] == "retrain", first
    job_id = first.actions[0].removeprefix("retrain:")
    assert world.run_job(job_id) is JobStatus.SUCCEEDED
    second = mon.run_once(now + timedelta(minutes=1))[0]
    assert second.actions == ["promoted:v2"], second
    return mon, now


def test_drift_triggers_a_retrain_whose_candidate_passes_the_gate_and_is_promoted(world):
    evaluator = ScriptedEvaluator({1: {"new": 0.40, "previous": 0.80},
                                   2: {"new": 0.75, "previous": 0.79}})
    mon, now = promote_v2(world, evaluator)
    assert world.champion() == 2

    first = [e for e in world.events() if e.type != "policy"]
    assert [(e.type, e.action) for e in first] == [
        ("decision", "retrain"), ("dataset", "compiled"), ("job", "started"),
        ("gate", "passed"), ("promotion", "promote"), ("decision", "skip")]
    assert first[-1].reason == "no_trigger", first[-1].message  # v2: no window, no new labels
    decision = first[0]
    # v1 answers "positive" to everything: its accuracy on the labels dropped, too.
    assert decision.reason == "quality_drop" and decision.data["triggers"] == [
        "quality_drop", "drift"]
    assert "drift in 1 of the last 1 windows" in decision.message
    assert decision.data["state"]["drift_history"] == [True]

    with world.platform.store.read() as session:
        report = ms.list_reports(session, world.adapter().id, windows_only=True)[-1]
        v2 = registry.get_version(session, world.tenant, "sentiment", 2)
        run = session.scalars(select(RetrainRun)).one()
        train_file = session.get(DatasetFile, run.training_file)
        job = session.get(FineTuningJob, run.job_id)
    assert report.version == 1 and report.drifted is True and report.n_window == 100
    assert report.input_drift["status"] == "drift" and report.input_drift["p_value"] < 0.01
    assert report.prediction_drift["status"] == "drift"  # v1 predicted "positive" for everything
    assert report.input_drift["n_reference"] == 120  # v1's training file is the reference

    # The compiled dataset: the labeled feedback (split train/eval by hash) plus replayed v1 data.
    train_rows = [json.loads(x) for x in file_bytes(world.platform, train_file).splitlines()]
    counts = run.dataset["counts"]
    assert counts["from_label"] == 80 and counts["replay"] > 0
    assert run.dataset["train"] + run.dataset["eval"] == 80 + counts["replay"]
    assert len(train_rows) == run.dataset["train"]
    assert {r["text"] for r in train_rows} & {r["text"] for r in OLD[:120]}  # replay
    assert {r["text"] for r in train_rows} & {r["text"] for r in NEW[:80]}
    lineage = json.loads(world.platform.artifacts.get_bytes(run.dataset["lineage_key"]))
    assert sum(1 for e in lineage if e["source"] == "label") == 80

    # The job warm-started from v1 on those files; v2's lineage points at them.
    assert job.model == "sentiment@v1" and job.auto_promote is False
    assert v2.lineage["training_file"]["id"] == run.training_file
    assert v2.lineage["validation_file"]["id"] == run.validation_file
    assert v2.lineage["parent_version"] == "sentiment@v1"

    # Both versions were evaluated on both splits; the run keeps the gate and the baseline.
    assert sorted(v for v, _ in evaluator.calls) == [1, 2]
    sizes = evaluator.calls[0][1]
    assert sizes == {"new": run.dataset["eval"], "previous": 30}  # v1's validation file
    assert run.status == "promoted" and run.candidate_version == 2
    assert run.gate["passed"] and run.gate["new_delta"] == pytest.approx(0.35)
    assert run.baseline == {"accuracy": {"value": 0.75, "n": run.dataset["eval"]}}

    m = mon.metrics
    assert metric(m, "tuneloop_policy_decisions_total", action="retrain") == 1
    assert metric(m, "tuneloop_retrain_jobs_total", outcome="succeeded") == 1
    assert metric(m, "tuneloop_promotions_total", action="promote") == 1
    assert metric(m, "tuneloop_gate_decisions_total", outcome="passed") == 1
    assert metric(m, "tuneloop_drift_p_value", tenant="acme", adapter="sentiment",
                  test="input") < 0.01
    assert metric(m, "tuneloop_dataset_examples", tenant="acme", adapter="sentiment") > 80

    # The new champion is watched from a fresh window: no data yet, no new decision to retrain.
    third = mon.run_once(now + timedelta(minutes=2))[0]
    assert third.champion == 2 and third.drifted is None
    assert third.decision["action"] == "skip" and not third.actions


def test_dry_run_decides_and_records_but_starts_nothing(world):
    world.set_policy(EAGER.model_copy(update={"dry_run": True}))
    shifted_traffic(world)
    mon = monitor(world, ScriptedEvaluator({}))
    now = world.t0 + timedelta(hours=8)
    for minutes in (0, 1):
        cycle = mon.run_once(now + timedelta(minutes=minutes))[0]
        assert cycle.decision["action"] == "dry_run" and "drift" in cycle.decision["triggers"]
        assert not cycle.actions
    decisions = world.events("decision")
    assert len(decisions) == 1 and decisions[0].message.startswith("dry run: would retrain")
    assert metric(mon.metrics, "tuneloop_policy_decisions_total", action="dry_run") == 2
    with world.platform.store.read() as session:
        assert len(session.scalars(select(FineTuningJob)).all()) == 1  # v1's job only
    assert world.runs() == [] and world.champion() == 1


def test_rejected_candidate_then_cooldown_then_retrain_on_new_labels(world):
    world.set_policy(EAGER)
    ids = shifted_traffic(world, n=140, labeled=80)
    evaluator = ScriptedEvaluator({1: {"new": 0.5, "previous": 0.8},
                                   2: {"new": 0.9, "previous": 0.6}})  # forgets the old data
    mon = monitor(world, evaluator)
    now = world.t0 + timedelta(hours=8)
    job_id = mon.run_once(now)[0].actions[0].removeprefix("retrain:")
    assert world.run_job(job_id) is JobStatus.SUCCEEDED
    gated = mon.run_once(now + timedelta(minutes=1))[0]
    assert gated.actions == ["reject:v2"] and world.champion() == 1
    run = world.runs()[0]
    assert run.status == "rejected" and run.gate["reason"] == "regression"
    assert "regressed by 0.2" in world.events("promotion")[-1].message
    assert evaluator.released == ["sentiment@v2"]  # a refused candidate leaves the engines
    assert run.evaluation["scorer"] == "scripted"

    # More labels arrive; drift persists, but the last training started an hour ago.
    world.label(ids[80:140], NEW[80:140], 1, now + timedelta(minutes=5))
    cooling = mon.run_once(now + timedelta(hours=1))[0]
    assert cooling.decision["action"] == "skip" and cooling.decision["reason"] == "cooldown"
    assert cooling.decision["message"].startswith(
        f"in cooldown until {(now + timedelta(hours=6)).isoformat()}")
    assert "drift" in cooling.decision["triggers"]
    retry = mon.run_once(now + timedelta(hours=7))[0]
    assert retry.decision["action"] == "retrain" and retry.actions[0].startswith("retrain:")
    newest = world.runs()[0]
    assert newest.champion_version == 1 and newest.dataset["counts"]["from_label"] == 140


def test_candidate_waits_for_approval_without_auto_promote(world):
    world.set_policy(EAGER.model_copy(update={"auto_promote": False}))
    shifted_traffic(world)
    mon = monitor(world, ScriptedEvaluator({1: {"new": 0.4, "previous": 0.8},
                                            2: {"new": 0.8, "previous": 0.8}}))
    now = world.t0 + timedelta(hours=8)
    job_id = mon.run_once(now)[0].actions[0].removeprefix("retrain:")
    assert world.run_job(job_id) is JobStatus.SUCCEEDED
    assert mon.run_once(now + timedelta(minutes=1))[0].actions == ["await_approval:v2"]
    assert world.champion() == 1 and world.runs()[0].status == "awaiting_approval"
    assert mon.evaluator.released == []  # it may still be promoted: stays loaded
    assert 'POST /v1/adapters/sentiment/promote {"version": 2}' in \
        world.events("promotion")[-1].message


def test_rollback_when_the_promoted_version_is_worse_on_fresh_labeled_feedback(world):
    evaluator = ScriptedEvaluator({1: {"new": 0.40, "previous": 0.80},
                                   2: {"new": 0.90, "previous": 0.80}})
    mon, _ = promote_v2(world, evaluator)
    # v2 serves new traffic and gets it mostly wrong (baseline at promotion: 0.9).
    start = utcnow() + timedelta(seconds=1)
    rows = NEW[100:160]
    wrong = {r["text"] for r in rows[:40]}
    other = {"negative": "positive", "positive": "neutral", "neutral": "negative"}
    ids = world.serve(rows, 2, start,
                      predict=lambda r: other[r["label"]] if r["text"] in wrong else r["label"])
    world.label(ids, rows, 2, start + timedelta(minutes=1))
    cycle = mon.run_once(utcnow() + timedelta(minutes=10))[0]
    assert cycle.quality["checks"]["accuracy"]["value"] == pytest.approx(20 / 60)
    assert cycle.quality["degraded"] is True
    assert cycle.actions == ["rolled_back:v2->v1"] and world.champion() == 1
    rollback = world.events("rollback")[-1]
    assert rollback.action == "rollback" and rollback.reason == "quality_drop"
    assert "accuracy dropped significantly" in rollback.message
    assert world.runs()[0].status == "rolled_back"
    assert metric(mon.metrics, "tuneloop_promotions_total", action="rollback") == 1
    with world.platform.store.read() as session:
        history = registry.champion_history(session, world.adapter())
    assert history[-1].action == "rollback" and history[-1].reason.startswith("monitor:")


def test_rollback_is_only_recorded_under_dry_run(world):
    evaluator = ScriptedEvaluator({1: {"new": 0.40, "previous": 0.80},
                                   2: {"new": 0.90, "previous": 0.80}})
    mon, _ = promote_v2(world, evaluator)
    world.set_policy(EAGER.model_copy(update={"dry_run": True}))
    start = utcnow() + timedelta(seconds=1)
    rows = NEW[100:150]
    ids = world.serve(rows, 2, start, predict=lambda r: "neutral" if r["label"] != "neutral"
                      else "positive")
    world.label(ids, rows, 2, start + timedelta(minutes=1))
    cycle = mon.run_once(utcnow() + timedelta(minutes=10))[0]
    assert not cycle.actions and world.champion() == 2
    assert world.events("rollback")[-1].reason == "dry_run"


def test_adapters_without_a_policy_are_not_monitored(world):
    shifted_traffic(world)
    assert monitor(world, ScriptedEvaluator({})).run_once(world.t0 + timedelta(hours=2)) == []


def test_standalone_monitor_process_serves_metrics(make_settings, database_url):
    from fastapi.testclient import TestClient

    from tuneloop.monitor import standalone_app
    from tuneloop.state import MonitorOptions

    app = standalone_app(make_settings(database_url=database_url), MonitorOptions(interval_s=3600))
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        deadline = time.monotonic() + 30
        while "tuneloop_monitor_cycle_seconds_count 1.0" not in (body := client.get(
                "/metrics").text) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "tuneloop_monitor_cycle_seconds_count 1.0" in body  # the first pass ran at start
    assert "tuneloop_drift_p_value" in body and "tuneloop_promotions_total" in body


def test_monitor_once_from_the_cli(monkeypatch, tmp_path, base_model_dir):
    from typer.testing import CliRunner

    from tuneloop.cli.main import app

    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    monkeypatch.setenv("TUNELOOP_ADMIN_KEY", "admin-test-key")
    result = CliRunner().invoke(app, ["monitor", "--once"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []


class FlakySwitcher:
    """Fails the first promotion (engines not ready), then switches in the registry."""

    def __init__(self, platform):
        from services.hot_swap import HotSwap

        self.inner = HotSwap(platform)
        self.calls = 0

    def promote(self, tenant, name, version, reason):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("engine not ready")
        self.inner.promote(tenant, name, version, reason)

    def rollback(self, tenant, name, reason):
        return self.inner.rollback(tenant, name, reason)


def test_a_failed_promotion_is_retried_on_the_next_pass(world):
    world.set_policy(EAGER)
    shifted_traffic(world)
    evaluator = ScriptedEvaluator({1: {"new": 0.4, "previous": 0.8},
                                   2: {"new": 0.8, "previous": 0.8}})
    mon = monitor(world, evaluator, switcher=FlakySwitcher(world.platform))
    now = world.t0 + timedelta(hours=8)
    job_id = mon.run_once(now)[0].actions[0].removeprefix("retrain:")
    assert world.run_job(job_id) is JobStatus.SUCCEEDED
    failed = mon.run_once(now + timedelta(minutes=1))[0]
    assert failed.error == "RuntimeError: engine not ready" and world.champion() == 1
    assert world.runs()[0].status == "training"
    assert world.events("error")[-1].message.startswith("monitor pass failed: RuntimeError")
    assert mon.run_once(now + timedelta(minutes=2))[0].actions == ["promoted:v2"]
    assert metric(mon.metrics, "tuneloop_retrain_jobs_total", outcome="succeeded") == 1
    assert metric(mon.metrics, "tuneloop_monitor_cycles_total", outcome="error") == 1


def test_a_failed_job_ends_the_run(world, peft_adapter):
    world.set_policy(EAGER)
    shifted_traffic(world)
    mon = monitor(world, ScriptedEvaluator({}))
    now = world.t0 + timedelta(hours=8)
    job_id = mon.run_once(now)[0].actions[0].removeprefix("retrain:")
    failing = JobManager(world.platform, poll_s=0.0,
                         runner=ScriptedRunner(peft_adapter, steps=1, fail_with="out of memory"))
    assert failing.run_job(job_id) is JobStatus.FAILED
    cycle = mon.run_once(now + timedelta(minutes=1))[0]
    assert cycle.actions == [f"job_failed:{job_id}"]
    assert world.runs()[0].status == "failed"
    assert "out of memory" in world.events("job")[-1].message
    assert metric(mon.metrics, "tuneloop_retrain_jobs_total", outcome="failed") == 1


def test_prediction_drift_compares_with_the_champions_own_held_out_predictions(world):
    """A champion that always answers "positive" did so on its held-out split too: its
    production predictions are no drift, although the training labels are balanced."""
    with world.platform.store.write() as session:
        v1 = session.scalars(select(AdapterVersion)).one()
        v1.metrics = {**v1.metrics, "eval": {"adapter": {"accuracy": 0.34, "confusion": {
            label: {"negative": 0, "neutral": 0, "positive": 10}
            for label in ("negative", "neutral", "positive")}}}}
    world.set_policy(EAGER)
    start = world.t0 + timedelta(hours=7)
    world.serve(OLD[150:250], 1, start, predict=lambda r: "positive")
    cycle = monitor(world, ScriptedEvaluator({})).run_once(world.t0 + timedelta(hours=8))[0]
    assert cycle.prediction_drift["status"] == "no_drift", cycle.prediction_drift
    assert cycle.prediction_drift["details"]["reference"] == "predictions on the held-out split"
    assert cycle.input_drift["status"] == "no_drift" and cycle.drifted is False


def test_a_retrain_with_too_little_data_is_recorded_once_until_the_data_changes(world):
    world.set_policy(EAGER)
    ids = shifted_traffic(world, n=100, labeled=2)  # both labels fall in the training split
    mon = monitor(world, ScriptedEvaluator({}))
    now = world.t0 + timedelta(hours=8)
    for minute in range(3):  # the same inputs every pass: decided again, recorded once
        cycle = mon.run_once(now + timedelta(minutes=minute))[0]
        assert cycle.decision["action"] == "retrain" and cycle.actions == []
    assert [(e.type, e.reason) for e in world.events()] == [
        ("decision", "drift"), ("dataset", "dataset_too_small")]
    assert "0 eval examples" in world.events("dataset")[0].message
    world.label(ids[2:40], NEW[2:40], 1, now + timedelta(minutes=5))  # more labels: a new dataset
    cycle = mon.run_once(now + timedelta(minutes=10))[0]
    assert cycle.actions[0].startswith("retrain:")
    assert [e.action for e in world.events("decision")] == ["retrain", "retrain"]


def test_a_candidate_that_forgets_the_champions_texts_is_refused_on_kl(world):
    world.set_policy(EAGER.model_copy(update={"gate_max_forgetting_kl": 0.5}))
    shifted_traffic(world)
    evaluator = ScriptedEvaluator(
        {1: {"new": 0.5, "previous": 0.8}, 2: {"new": 0.9, "previous": 0.8}},  # accuracy: better
        distributions={1: {"positive": 0.9, "negative": 0.1},   # but on v1's own texts its
                       2: {"positive": 0.1, "negative": 0.9}})  # labels flipped
    mon = monitor(world, evaluator)
    now = world.t0 + timedelta(hours=8)
    job_id = mon.run_once(now)[0].actions[0].removeprefix("retrain:")
    assert world.run_job(job_id) is JobStatus.SUCCEEDED
    assert mon.run_once(now + timedelta(minutes=1))[0].actions == ["reject:v2"]
    run = world.runs()[0]
    kl = 0.9 * math.log(0.9 / 0.1) + 0.1 * math.log(0.1 / 0.9)
    assert run.gate["reason"] == "forgetting"
    assert run.gate["forgetting"] == pytest.approx(kl)
    assert run.evaluation["forgetting_kl"] == pytest.approx(kl)
    assert "KL 1.758 nats (allowed 0.5)" in world.events("promotion")[-1].message
    assert world.champion() == 1


@pytest.mark.parametrize(("share", "replayed"), [(0.0, 0), (1.0, 120)])
def test_the_policy_sets_how_much_of_the_champions_data_is_replayed(world, share, replayed):
    world.set_policy(EAGER.model_copy(update={"replay_fraction": share}))
    shifted_traffic(world)
    mon = monitor(world, ScriptedEvaluator({1: {"new": 0.40, "previous": 0.80}}))
    first = mon.run_once(world.t0 + timedelta(hours=8))[0]
    assert first.decision["action"] == "retrain", first
    with world.platform.store.read() as session:
        run = session.scalars(select(RetrainRun)).one()
    assert run.dataset["counts"]["replay"] == replayed  # v1 trained on 120 examples
