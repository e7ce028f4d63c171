"""The monitor's pure observation: drift tests only on a new window, prediction drift only for
classifiers, quality against the baseline, and a report stored only when something is new."""

from __future__ import annotations

from dataclasses import replace

from monitoring.config import MonitorConfig
from monitoring.observations import QualityCounts, Window
from monitoring.observe import ObservationInputs, observe
from monitoring.quality import Baseline
from tests.support.drift_data import texts_by_domain

CFG = MonitorConfig(n_permutations=100)


def inputs(**changes: object) -> ObservationInputs:
    base = ObservationInputs(
        adapter_id=1, champion_ref="sent@v1", champion_version=1, champion_task="classification",
        since=None, window=None, reference_texts=[], reference_labels=[], predicted=None,
        counts=QualityCounts(correct=40, labeled=50), baseline_accuracy=Baseline(0.8, 200),
        baseline_negative=None, previous_version=None, previous_counts=None)
    return replace(base, **changes)


def test_without_a_window_only_quality_is_observed_and_stored_once():
    first = observe(inputs(), CFG)
    assert first.drift_tests == {} and first.drifted is None and first.new_window is None
    assert first.quality_summary["counts"] == {"correct": 40, "labeled": 50, "negative": 0,
                                               "rated": 0}
    assert first.store_report  # no report yet
    again = observe(inputs(previous_version=1, previous_counts=first.quality_summary["counts"]),
                    CFG)
    assert not again.store_report  # nothing new: no second report
    promoted = observe(inputs(previous_version=0, previous_counts=first.quality_summary["counts"]),
                       CFG)
    assert promoted.store_report  # a new champion gets its own report


def test_a_shifted_window_drifts_against_the_reference():
    old = list(texts_by_domain()["tweet"][:200])
    new = list(texts_by_domain()["product_review"][:100])
    labels = ["positive", "negative"] * 50
    shifted = observe(inputs(window=Window(new, labels, len(new)), reference_texts=old,
                             reference_labels=["positive", "negative"] * 100), CFG)
    assert set(shifted.drift_tests) == {"input", "prediction"}
    assert shifted.drift_tests["input"].drifted and shifted.drifted
    assert shifted.new_window is not None and shifted.new_window["n_window"] == 100
    assert shifted.store_report
    chat = observe(inputs(champion_task="chat", window=Window(new, [], len(new)),
                          reference_texts=old), CFG)
    assert set(chat.drift_tests) == {"input"}


def test_a_window_without_reference_says_why():
    got = observe(inputs(window=Window(["a text"] * 60, ["positive"] * 60, 60)), CFG)
    assert got.drifted is None  # insufficient data: no verdict
    assert "sent@v1 has no training file" in got.input_drift["details"]["reference"]
