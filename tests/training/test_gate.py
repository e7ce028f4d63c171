"""The gate, pure: publishing's rule (at least as good as the champion, else the base) and the
monitor's promotion rule (better on the new split, within tolerance on the previous one)."""

from __future__ import annotations

import json
import math

import pytest

from training.gate import GateReason, decide_gate, gate_metric

# -- publishing a job: min_improvement=None ---------------------------------------------------


def job_gate(task: str, evaluation: dict, champion_version: str | None):
    """The gate on one held-out split, as publishing calls it."""
    metric, higher = gate_metric(task)

    def split(key: str) -> dict | None:
        return {"held_out": evaluation[key]} if key in evaluation else None

    return decide_gate(split("adapter") or {}, split("champion"), "held_out", metric=metric,
                       higher_is_better=higher, base=split("base"),
                       champion_version=champion_version)


@pytest.mark.parametrize(("evaluation", "reason", "passed"), [
    ({"adapter": {"accuracy": 0.8}, "base": {"accuracy": 0.3}, "champion": {"accuracy": 0.7}},
     GateReason.BEATS_CHAMPION, True),
    ({"adapter": {"accuracy": 0.7}, "base": {"accuracy": 0.3}, "champion": {"accuracy": 0.7}},
     GateReason.TIES_CHAMPION, True),
    ({"adapter": {"accuracy": 0.6}, "base": {"accuracy": 0.3}, "champion": {"accuracy": 0.7}},
     GateReason.WORSE_THAN_CHAMPION, False),
    ({"adapter": {"accuracy": 0.6}, "base": {"accuracy": 0.3}}, GateReason.BEATS_BASE, True),
    ({"adapter": {"accuracy": 0.2}, "base": {"accuracy": 0.3}}, GateReason.WORSE_THAN_BASE,
     False),
    ({}, GateReason.NOT_EVALUATED, False),
])
def test_classification_gate(evaluation, reason, passed):
    decision = job_gate("classification", evaluation, "x@v1")
    assert (decision.reason, decision.passed) == (reason, passed)
    assert decision.metric == "accuracy" and decision.higher_is_better
    assert json.loads(json.dumps(decision.to_dict()))["reason"] == str(reason)


def test_chat_gate_prefers_lower_eval_loss():
    better = job_gate("chat", {"adapter": {"eval_loss": 1.0}, "champion": {"eval_loss": 1.5}},
                      "c@v2")
    worse = job_gate("chat", {"adapter": {"eval_loss": 2.0}, "champion": {"eval_loss": 1.5}},
                     "c@v2")
    assert better.passed and better.reason is GateReason.BEATS_CHAMPION
    assert not worse.passed and "champion c@v2 1.5000" in worse.message
    assert "lower is better" in worse.message


# -- the monitor's promotion: min_improvement a number ----------------------------------------


def metrics(new: float, old: float | None = None) -> dict:
    out = {"eval@v2": {"accuracy": new}}
    if old is not None:
        out["eval@v1"] = {"accuracy": old}
    return out


def promotion_gate(candidate, champion, new_split, previous_split, tolerance, *,
                   metric="accuracy", min_improvement=0.0):
    return decide_gate(candidate, champion, new_split, metric=metric,
                       previous_split=previous_split, tolerance=tolerance,
                       min_improvement=min_improvement)


def test_gate_passes_better_candidate_within_tolerance():
    gate = promotion_gate(metrics(0.90, 0.85), metrics(0.60, 0.86), "eval@v2", "eval@v1", 0.02)
    assert gate.passed and gate.reason is GateReason.PASSED
    assert gate.new_delta == pytest.approx(0.30)
    assert gate.previous_delta == pytest.approx(-0.01)


def test_gate_rejects_no_improvement():
    gate = promotion_gate(metrics(0.60, 0.86), metrics(0.60, 0.86), "eval@v2", "eval@v1", 0.02)
    assert not gate.passed and gate.reason is GateReason.NO_IMPROVEMENT


def test_gate_rejects_regression_on_previous_split():
    gate = promotion_gate(metrics(0.90, 0.80), metrics(0.60, 0.86), "eval@v2", "eval@v1", 0.02)
    assert not gate.passed and gate.reason is GateReason.REGRESSION
    assert "regressed by 0.06" in gate.message


def test_gate_lower_is_better_for_loss():
    cand = {"new": {"eval_loss": 1.0}, "old": {"eval_loss": 1.21}}
    champ = {"new": {"eval_loss": 1.5}, "old": {"eval_loss": 1.2}}
    assert promotion_gate(cand, champ, "new", "old", 0.05, metric="eval_loss").passed
    assert not promotion_gate(cand, champ, "new", "old", 0.005, metric="eval_loss").passed


def test_gate_without_champion_or_previous_split():
    assert promotion_gate(metrics(0.5), None, "eval@v2", None, 0.0).reason is (
        GateReason.NO_CHAMPION)
    assert promotion_gate(metrics(0.7), metrics(0.6), "eval@v2", None, 0.0).passed


def test_gate_missing_metric():
    gate = promotion_gate({}, metrics(0.6), "eval@v2", None, 0.0)
    assert not gate.passed and gate.reason is GateReason.MISSING_METRIC
    gate = promotion_gate(metrics(0.9), metrics(0.6, 0.8), "eval@v2", "eval@v1", 0.0)
    assert gate.reason is GateReason.MISSING_METRIC


def test_gate_min_improvement():
    gate = promotion_gate(metrics(0.61), metrics(0.60), "eval@v2", None, 0.0,
                          min_improvement=0.02)
    assert gate.reason is GateReason.NO_IMPROVEMENT


def test_label_kl_is_zero_for_the_same_model_and_grows_as_labels_move():
    from training.gate import label_kl

    same = [{"a": 0.7, "b": 0.3}, {"a": 0.2, "b": 0.8}]
    assert label_kl(same, same) == 0.0
    moved = [{"a": 0.3, "b": 0.7}, {"a": 0.2, "b": 0.8}]
    expected = (0.7 * math.log(0.7 / 0.3) + 0.3 * math.log(0.3 / 0.7)) / 2
    assert label_kl(same, moved) == pytest.approx(expected)
    assert label_kl([{"a": 1.0, "b": 0.0}], [{"a": 0.0, "b": 1.0}]) == pytest.approx(
        math.log(1e12))  # a label the candidate rules out costs the floor, not infinity
    with pytest.raises(ValueError, match="2 reference but 1 candidate"):
        label_kl(same, moved[:1])


def test_forgetting_fails_an_otherwise_passing_candidate_only_above_the_limit():
    cand, champ = {"new": {"accuracy": 0.9}}, {"new": {"accuracy": 0.5}}
    common = {"metric": "accuracy", "min_improvement": 0.0}
    passed = decide_gate(cand, champ, "new", forgetting=0.2, max_forgetting=0.5, **common)
    assert passed.passed and passed.forgetting == 0.2 and "label KL" in passed.message
    refused = decide_gate(cand, champ, "new", previous_split="previous", forgetting=0.8,
                          max_forgetting=0.5, **common)
    assert not refused.passed and refused.reason is GateReason.FORGETTING
    assert decide_gate(cand, champ, "new", forgetting=9.0, **common).passed  # no limit: reported
