"""Quality checks: Wilson intervals, one-sided drop tests, report status."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring.quality import (
    Baseline,
    QualityStatus,
    accuracy_counts,
    check_proportion,
    quality_report,
    wilson_interval,
    worse_than_baseline_p,
)


def test_wilson_interval_known_values():
    low, high = wilson_interval(81, 263)  # textbook example: 0.2553 .. 0.3662
    assert low == pytest.approx(0.2553, abs=1e-3)
    assert high == pytest.approx(0.3662, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)


def test_wilson_interval_covers_the_truth():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(2000):
        k = rng.binomial(50, 0.8)
        low, high = wilson_interval(int(k), 50)
        covered += low <= 0.8 <= high
    assert 0.93 <= covered / 2000 <= 0.97


def test_accuracy_drop_is_detected():
    report = quality_report(correct=140, labeled=200, baseline_accuracy=Baseline(0.9, 500))
    acc = report.checks["accuracy"]
    assert acc.value == pytest.approx(0.7)
    assert acc.worse and report.degraded
    assert report.status is QualityStatus.DEGRADED
    assert acc.ci_low < 0.7 < acc.ci_high
    assert report.details["worse_metrics"] == ["accuracy"]
    json.dumps(report.to_dict())


def test_small_difference_is_not_a_drop():
    report = quality_report(correct=176, labeled=200, baseline_accuracy=Baseline(0.9, 500))
    assert not report.degraded
    assert report.checks["accuracy"].status is QualityStatus.OK


def test_improvement_is_never_a_drop():
    check = check_proportion("accuracy", 99, 100, Baseline(0.5), higher_is_better=True)
    assert not check.worse and check.p_value > 0.99


def test_negative_rate_rise_is_worse():
    report = quality_report(negative=60, rated=200, baseline_negative_rate=Baseline(0.1))
    neg = report.checks["negative_rate"]
    assert neg.worse and neg.p_value < 1e-6
    assert report.checks["accuracy"].status is QualityStatus.INSUFFICIENT_DATA
    assert report.status is QualityStatus.DEGRADED


def test_too_few_labels_is_insufficient_data():
    report = quality_report(correct=1, labeled=10, baseline_accuracy=Baseline(0.9, 100))
    assert report.status is QualityStatus.INSUFFICIENT_DATA
    assert report.checks["accuracy"].p_value is None
    assert not report.degraded


def test_no_baseline_is_reported():
    report = quality_report(correct=50, labeled=100)
    assert report.checks["accuracy"].status is QualityStatus.NO_BASELINE
    assert report.status is QualityStatus.NO_BASELINE


def test_min_effect_ignores_tiny_significant_drops():
    check = check_proportion(
        "accuracy", 8900, 10000, Baseline(0.91, 10000), higher_is_better=True, min_effect=0.05
    )
    assert check.p_value < 0.01 and not check.worse


def test_drop_test_false_alarm_rate():
    rng = np.random.default_rng(3)
    alarms = 0
    for _ in range(1000):
        correct = int(rng.binomial(200, 0.85))
        alarms += worse_than_baseline_p(correct, 200, Baseline(0.85)) < 0.05
    assert alarms / 1000 <= 0.06


def test_two_proportion_degenerate_case():
    assert worse_than_baseline_p(100, 100, Baseline(1.0, 50)) == 1.0
    assert worse_than_baseline_p(0, 0, Baseline(0.5, 50)) == 1.0


def test_accuracy_counts():
    assert accuracy_counts(["a", "b", "c"], ["a", "x", "c"]) == (2, 3)
    with pytest.raises(ValueError, match="pair up"):
        accuracy_counts(["a"], [])


def test_baseline_validation():
    with pytest.raises(ValueError, match="proportion"):
        Baseline(1.2)
    with pytest.raises(ValueError, match="n must"):
        Baseline(0.5, 0)
