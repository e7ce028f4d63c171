"""Unit tests of the drift tests (fast; the calibration lives in test_drift_calibration.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from monitoring.drift import DriftStatus, input_drift, prediction_drift
from tests.support.drift_data import texts_by_domain


@pytest.fixture(scope="module")
def domains():
    return texts_by_domain()


def test_same_distribution_is_not_drift(domains):
    movies = domains["movie_review"]
    report = input_drift(movies[:400], movies[400:600])
    assert report.status is DriftStatus.NO_DRIFT
    assert not report.drifted
    assert report.p_value > report.threshold
    assert (report.n_reference, report.n_window) == (400, 200)
    assert report.method == "mmd-linear-tfidf-permutation"


def test_topic_shift_is_drift_and_names_the_terms(domains):
    report = input_drift(domains["movie_review"][:400], domains["tweet"][:200])
    assert report.status is DriftStatus.DRIFT and report.drifted
    # The smallest p-value a permutation test can give: 1 / (B + 1).
    assert report.p_value == pytest.approx(1 / 501)
    assert report.details["effect"] > 2
    terms = [t["term"] for t in report.details["top_terms"]]
    assert "anonymous" in terms  # tweets mention "@anonymous" all the time
    json.dumps(report.to_dict())  # JSON-ready


def test_small_window_is_insufficient_not_no_drift(domains):
    report = input_drift(domains["tweet"][:500], domains["editorial"][:49], min_window=50)
    assert report.status is DriftStatus.INSUFFICIENT_DATA
    assert report.p_value is None and report.statistic is None
    assert not report.drifted
    assert "49" in report.details["reason"]


def test_same_inputs_same_report(domains):
    ref, win = domains["product_review"][:300], domains["product_review"][300:400]
    assert input_drift(ref, win, seed=3) == input_drift(ref, win, seed=3)


def test_p_value_is_exact_under_exchangeability():
    # Pure noise vectors: p-values of a valid permutation test are (close to) uniform.
    rng = np.random.default_rng(0)
    p_values = []
    for trial in range(60):
        data = rng.normal(size=(120, 8))
        def embed(texts, data=data):
            return data[[int(t) for t in texts]]
        texts = [str(i) for i in range(120)]
        report = input_drift(texts[:60], texts[60:], embed=embed, n_permutations=99, seed=trial)
        p_values.append(report.p_value)
    assert report.method == "mmd-linear-embedding-permutation"
    assert 0.3 < float(np.mean(p_values)) < 0.7
    assert min(p_values) >= 1 / 100


def test_embedding_function_detects_shift():
    rng = np.random.default_rng(1)
    vectors = np.vstack([rng.normal(size=(100, 16)), rng.normal(loc=0.5, size=(100, 16))])
    texts = [str(i) for i in range(200)]
    report = input_drift(texts[:100], texts[100:], embed=lambda t: vectors[[int(x) for x in t]])
    assert report.drifted


def test_bad_embedding_shape_is_rejected():
    texts = [str(i) for i in range(60)]
    with pytest.raises(ValueError, match="one row per text"):
        input_drift(texts, texts, embed=lambda t: np.zeros((3, 2)))


def test_bad_parameters_are_rejected():
    texts = ["a b"] * 60
    with pytest.raises(ValueError, match="threshold"):
        input_drift(texts, texts, threshold=1.5)
    with pytest.raises(ValueError, match="n_permutations"):
        input_drift(texts, texts, n_permutations=5)


def test_texts_without_shared_vocabulary_do_not_crash():
    ref = [f"alpha{i}" for i in range(60)]
    win = [f"beta{i}" for i in range(60)]
    report = input_drift(ref, win)
    assert report.status is DriftStatus.NO_DRIFT  # nothing to compare, so no evidence


def test_large_samples_are_subsampled(domains):
    report = input_drift(domains["tweet"], domains["tweet"][:300], max_reference=1000)
    assert report.n_reference == 2500 and report.details["subsampled"]


def test_ten_thousand_texts_are_fast(domains):
    reference = [t for d in ("tweet", "movie_review") for t in domains[d]]
    window = [t for d in ("product_review", "editorial") for t in domains[d]]
    input_drift(reference[:200], window[:200])  # warm imports
    start = time.perf_counter()
    report = input_drift(reference, window)
    elapsed = time.perf_counter() - start
    assert report.drifted
    # Goal is <= 2 s on an idle 2-core machine; leave room for a busy CI runner.
    assert elapsed < 6.0, f"drift test on 10,000 texts took {elapsed:.2f} s"


# --- prediction drift -------------------------------------------------------------------------


def test_same_label_distribution_is_not_drift():
    reference = ["a"] * 300 + ["b"] * 200 + ["c"] * 100
    window = ["a"] * 50 + ["b"] * 33 + ["c"] * 17
    report = prediction_drift(reference, window)
    assert report.status is DriftStatus.NO_DRIFT
    assert report.method == "g-test-labels"
    assert report.details["total_variation"] < 0.02


def test_label_shift_is_drift():
    reference = {"a": 300, "b": 200, "c": 100}
    window = {"a": 20, "b": 30, "c": 50}
    report = prediction_drift(reference, window)
    assert report.drifted
    assert report.details["window_share"]["c"] == pytest.approx(0.5)


def test_label_unseen_in_reference_gives_finite_statistic():
    report = prediction_drift({"a": 100, "b": 100}, {"a": 40, "b": 40, "new": 20})
    assert np.isfinite(report.statistic)
    assert report.drifted
    assert report.details["unseen_in_reference"] == ["new"]


def test_single_label_everywhere_is_not_drift():
    report = prediction_drift(["x"] * 100, ["x"] * 60)
    assert report.p_value == 1.0 and not report.drifted


def test_prediction_drift_needs_a_minimum_window():
    report = prediction_drift(["a", "b"] * 50, ["a"] * 10)
    assert report.status is DriftStatus.INSUFFICIENT_DATA


def test_prediction_drift_false_alarms_are_rare():
    rng = np.random.default_rng(7)
    labels = np.array(["neg", "neu", "pos", "rare"])
    probs = [0.45, 0.3, 0.23, 0.02]
    reference = list(rng.choice(labels, size=2000, p=probs))
    alarms = sum(
        prediction_drift(reference, list(rng.choice(labels, size=200, p=probs))).drifted
        for _ in range(300)
    )
    assert alarms / 300 <= 0.03  # threshold 0.01; the pseudo-counts make the test conservative
