"""Calibration of the input drift test on real text (tests/data/drift, four domains).

- stationary: one domain split in two at random, >= 100 trials: false alarms <= 5%;
- topic shift: reference from one domain, a window of 200 from another: detection >= 90%.

Trials use a fixed seed, so the test is deterministic. ``benchmarks/drift.py`` runs the same
experiment at larger sizes and also times 10,000 texts.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from monitoring.drift import DEFAULT_THRESHOLD, input_drift
from tests.support.drift_data import DOMAINS, texts_by_domain

TRIALS = 120
REFERENCE = 500
WINDOW = 200


def _sample(rng: np.random.Generator, pool: tuple[str, ...], k: int) -> list[str]:
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


@pytest.fixture(scope="module")
def domains():
    return texts_by_domain()


def test_false_alarms_on_stationary_data(domains):
    rng = np.random.default_rng(2024)
    p_values = []
    for trial in range(TRIALS):
        pool = domains[DOMAINS[trial % len(DOMAINS)]]
        order = rng.permutation(len(pool))
        reference = [pool[i] for i in order[:REFERENCE]]
        window = [pool[i] for i in order[REFERENCE : REFERENCE + WINDOW]]
        p_values.append(input_drift(reference, window, seed=trial).p_value)
    p = np.array(p_values)
    assert (p < DEFAULT_THRESHOLD).mean() <= 0.05
    # The permutation p-value is exact: even at 0.05 the alarm rate stays near 5%
    # (0.09 is about three binomial standard deviations above it for 120 trials).
    assert (p < 0.05).mean() <= 0.09
    assert 0.35 < p.mean() < 0.65  # roughly uniform p-values


def test_detection_of_topic_shift_with_windows_of_200(domains):
    rng = np.random.default_rng(7)
    pairs = list(itertools.permutations(DOMAINS, 2))
    detected = 0
    for trial in range(TRIALS):
        source, target = pairs[trial % len(pairs)]
        reference = _sample(rng, domains[source], REFERENCE)
        window = _sample(rng, domains[target], WINDOW)
        detected += input_drift(reference, window, seed=trial).drifted
    assert detected / TRIALS >= 0.90
