"""Retrain policy: validation, every decision reason, promotion and rollback (the gate itself:
tests/training/test_gate.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from monitoring.policy import (
    Action,
    PolicyState,
    PromotionAction,
    Reason,
    RetrainPolicy,
    RollbackReason,
    drift_persists,
    promotion_action,
    should_retrain,
    should_rollback,
)
from monitoring.quality import Baseline, quality_report
from training.gate import decide_gate

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ENOUGH = {"new_examples": 10}


def decide(state: PolicyState, **policy) -> object:
    return should_retrain(RetrainPolicy(**policy), state, NOW)


# --- validation -------------------------------------------------------------------------------


def test_defaults_are_valid_and_documented():
    policy = RetrainPolicy()
    assert policy.enabled and policy.on_drift and not policy.dry_run
    undocumented = [n for n, f in RetrainPolicy.model_fields.items() if not f.description]
    assert undocumented == []
    schema = RetrainPolicy.model_json_schema()
    assert "persists" in schema["properties"]["on_drift"]["description"]


def test_m_greater_than_n_is_rejected_with_a_fix():
    with pytest.raises(ValidationError, match=r"drift_windows_m \(4\) must be <= drift_windows_n"):
        RetrainPolicy(drift_windows_m=4, drift_windows_n=3)


def test_tenant_budget_above_total_is_rejected():
    with pytest.raises(ValidationError, match="max_concurrent_jobs_per_tenant"):
        RetrainPolicy(max_concurrent_jobs_per_tenant=3, max_concurrent_jobs_total=2)


@pytest.mark.parametrize(
    "field, value",
    [("schedule_hours", 0), ("cooldown_hours", -1), ("gate_tolerance", 2), ("drift_windows_n", 0)],
)
def test_out_of_range_values_are_rejected(field, value):
    with pytest.raises(ValidationError):
        RetrainPolicy(**{field: value})


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError, match="extra"):
        RetrainPolicy(on_drfit=True)


def test_policy_round_trips_as_json():
    policy = RetrainPolicy(schedule_hours=24, dry_run=True)
    assert RetrainPolicy.model_validate_json(policy.model_dump_json()) == policy


# --- triggers -----------------------------------------------------------------------------------


def test_disabled():
    d = decide(PolicyState(quality_degraded=True, **ENOUGH), enabled=False)
    assert (d.action, d.reason) == (Action.SKIP, Reason.DISABLED)


def test_no_trigger():
    d = decide(PolicyState(drift_history=[True, False, False], **ENOUGH))
    assert (d.action, d.reason) == (Action.SKIP, Reason.NO_TRIGGER)


def test_drift_must_persist_m_of_n():
    d = decide(PolicyState(drift_history=[False, True, None, True], **ENOUGH))
    assert (d.action, d.reason) == (Action.RETRAIN, Reason.DRIFT)
    assert "2 of the last 3" in d.message


def test_insufficient_windows_do_not_count():
    assert drift_persists([True, None, None, None], 2, 3) == (False, 1, 1)
    assert drift_persists([True, True, False, False], 2, 3) == (False, 1, 3)


def test_drift_trigger_can_be_switched_off():
    d = decide(PolicyState(drift_history=[True] * 3, **ENOUGH), on_drift=False)
    assert d.reason is Reason.NO_TRIGGER


def test_new_labels():
    d = decide(PolicyState(new_examples=250))
    assert (d.action, d.reason) == (Action.RETRAIN, Reason.NEW_LABELS)
    assert decide(PolicyState(new_examples=199)).reason is Reason.NO_TRIGGER


def test_quality_drop_comes_first_among_triggers():
    d = decide(PolicyState(quality_degraded=True, drift_history=[True] * 3, new_examples=500))
    assert d.reason is Reason.QUALITY_DROP
    assert d.triggers == (Reason.QUALITY_DROP, Reason.DRIFT, Reason.NEW_LABELS)
    assert decide(PolicyState(quality_degraded=True, **ENOUGH), on_quality_drop=False).reason is (
        Reason.NO_TRIGGER
    )


def test_schedule():
    recent = PolicyState(last_training_started_at=NOW - timedelta(hours=23), **ENOUGH)
    due = PolicyState(last_training_started_at=NOW - timedelta(hours=25), **ENOUGH)
    never = PolicyState(reference_time=NOW - timedelta(hours=30), **ENOUGH)
    assert decide(recent, schedule_hours=24).reason is Reason.NO_TRIGGER
    assert decide(due, schedule_hours=24).reason is Reason.SCHEDULE
    assert decide(never, schedule_hours=24).reason is Reason.SCHEDULE
    assert decide(PolicyState(**ENOUGH), schedule_hours=24).reason is Reason.SCHEDULE


# --- guards -------------------------------------------------------------------------------------

FIRING = {"drift_history": [True, True, True], "new_examples": 10}


def test_job_running():
    d = decide(PolicyState(adapter_job_running=True, **FIRING))
    assert (d.action, d.reason) == (Action.SKIP, Reason.JOB_RUNNING)
    assert d.triggers == (Reason.DRIFT,)
    assert "triggers: drift" in d.message


def test_cooldown():
    state = PolicyState(last_training_started_at=NOW - timedelta(hours=2), **FIRING)
    d = decide(state, cooldown_hours=6)
    assert (d.action, d.reason) == (Action.SKIP, Reason.COOLDOWN)
    assert "2026-11-21T16:00:00+00:00" in d.message
    assert decide(state, cooldown_hours=1).action is Action.RETRAIN


def test_not_enough_new_data():
    d = decide(PolicyState(drift_history=[True] * 3, new_examples=0))
    assert (d.action, d.reason) == (Action.SKIP, Reason.NOT_ENOUGH_NEW_DATA)
    assert decide(PolicyState(drift_history=[True] * 3), min_new_examples=0).action is (
        Action.RETRAIN
    )


def test_tenant_budget():
    d = decide(PolicyState(tenant_running_jobs=1, total_running_jobs=1, **FIRING))
    assert (d.action, d.reason) == (Action.SKIP, Reason.TENANT_BUDGET)


def test_global_budget():
    d = decide(PolicyState(tenant_running_jobs=0, total_running_jobs=2, **FIRING))
    assert (d.action, d.reason) == (Action.SKIP, Reason.GLOBAL_BUDGET)


def test_dry_run():
    d = decide(PolicyState(**FIRING), dry_run=True)
    assert (d.action, d.reason) == (Action.DRY_RUN, Reason.DRIFT)
    assert d.message.startswith("dry run: would retrain")
    assert d.to_dict()["action"] == "dry_run"


def test_every_reason_is_reachable():
    seen = {
        decide(PolicyState(**FIRING), enabled=False).reason,
        decide(PolicyState()).reason,
        decide(PolicyState(adapter_job_running=True, **FIRING)).reason,
        decide(PolicyState(last_training_started_at=NOW, **FIRING)).reason,
        decide(PolicyState(drift_history=[True] * 3)).reason,
        decide(PolicyState(tenant_running_jobs=5, total_running_jobs=5, **FIRING)).reason,
        decide(PolicyState(total_running_jobs=5, **FIRING)).reason,
        decide(PolicyState(quality_degraded=True, **ENOUGH)).reason,
        decide(PolicyState(**FIRING)).reason,
        decide(PolicyState(new_examples=500)).reason,
        decide(PolicyState(**ENOUGH), schedule_hours=1).reason,
    }
    assert seen == set(Reason)


# --- promotion -----------------------------------------------------------------------------------


def metrics(new: float, old: float | None = None) -> dict:
    out = {"eval@v2": {"accuracy": new}}
    if old is not None:
        out["eval@v1"] = {"accuracy": old}
    return out


def test_promotion_action():
    passed = decide_gate(metrics(0.9), metrics(0.6), "eval@v2", metric="accuracy",
                         min_improvement=0.0)
    failed = decide_gate(metrics(0.5), metrics(0.6), "eval@v2", metric="accuracy",
                         min_improvement=0.0)
    assert promotion_action(RetrainPolicy(), passed) is PromotionAction.PROMOTE
    assert promotion_action(RetrainPolicy(auto_promote=False), passed) is (
        PromotionAction.AWAIT_APPROVAL
    )
    assert promotion_action(RetrainPolicy(dry_run=True), passed) is PromotionAction.DRY_RUN
    assert promotion_action(RetrainPolicy(), failed) is PromotionAction.REJECT


# --- rollback -----------------------------------------------------------------------------------

DROPPED = quality_report(correct=120, labeled=200, baseline_accuracy=Baseline(0.9, 300))
FINE = quality_report(correct=178, labeled=200, baseline_accuracy=Baseline(0.9, 300))
FEW = quality_report(correct=2, labeled=5, baseline_accuracy=Baseline(0.9, 300))


def test_rollback_on_significant_drop():
    d = should_rollback(RetrainPolicy(), DROPPED, has_previous_version=True)
    assert d.rollback and d.reason is RollbackReason.QUALITY_DROP
    assert "accuracy" in d.message


@pytest.mark.parametrize(
    "policy, report, previous, reason",
    [
        (RetrainPolicy(), FINE, True, RollbackReason.QUALITY_OK),
        (RetrainPolicy(), FEW, True, RollbackReason.INSUFFICIENT_DATA),
        (RetrainPolicy(), quality_report(correct=50, labeled=100), True, RollbackReason.NO_BASELINE),
        (RetrainPolicy(), DROPPED, False, RollbackReason.NO_PREVIOUS_VERSION),
        (RetrainPolicy(rollback_on_quality_drop=False), DROPPED, True, RollbackReason.DISABLED),
        (RetrainPolicy(dry_run=True), DROPPED, True, RollbackReason.DRY_RUN),
    ],
)
def test_no_rollback(policy, report, previous, reason):
    d = should_rollback(policy, report, previous)
    assert not d.rollback and d.reason is reason
