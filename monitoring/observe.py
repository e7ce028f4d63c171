"""What one monitor pass concludes about a champion, as a pure function: the drift tests of a
new production window against the training reference, and quality on feedback against the
champion's baseline. :meth:`monitoring.loop.Monitor._observe` reads the inputs, calls
:func:`observe`, sets the metrics and stores the report."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from monitoring.config import MonitorConfig
from monitoring.drift import DriftReport, DriftStatus, input_drift, prediction_drift
from monitoring.observations import QualityCounts, Window
from monitoring.quality import Baseline, QualityReport, quality_report
from services.store.models import AdapterTask


@dataclass(frozen=True)
class ObservationInputs:
    """Everything :func:`observe` needs, read from the store and the artifact store."""

    adapter_id: int
    champion_ref: str
    champion_version: int
    champion_task: str
    since: datetime | None
    window: Window | None
    """A new production window to test (None: not enough new inputs yet)."""
    reference_texts: list[str]
    reference_labels: list[str]
    predicted: dict[str, int] | None
    """The champion's predicted-label counts on its held-out split (prediction-drift reference)."""
    counts: QualityCounts
    baseline_accuracy: Baseline | None
    baseline_negative: Baseline | None
    previous_version: int | None
    previous_counts: dict[str, int] | None
    """The champion version and feedback counts of the latest stored report."""


@dataclass(frozen=True)
class Observation:
    drift_tests: dict[str, DriftReport]
    drifted: bool | None
    input_drift: dict[str, Any] | None
    prediction_drift: dict[str, Any] | None
    quality: QualityReport
    quality_summary: dict[str, Any]
    """The quality report with its counts (what the cycle and the stored report keep)."""
    new_window: dict[str, Any] | None
    """The new window's report fields, when a window was tested."""
    store_report: bool
    """Whether there is anything new to store (a window, or changed feedback counts)."""


def observe(inputs: ObservationInputs, cfg: MonitorConfig) -> Observation:
    """Pure: test the window (if any) and the quality; decide whether a report is stored."""
    tests: dict[str, DriftReport] = {}
    drifted = input_summary = prediction_summary = new_window = None
    window = inputs.window
    if window is not None:
        seed = zlib.crc32(f"{inputs.adapter_id}:{inputs.champion_version}:{window.newest}".encode())
        drift = input_drift(inputs.reference_texts, window.texts, threshold=cfg.drift_threshold,
                            n_permutations=cfg.n_permutations, min_reference=cfg.min_reference,
                            min_window=cfg.min_window, seed=seed)
        tests["input"] = drift
        if inputs.champion_task == AdapterTask.CLASSIFICATION:
            predicted = inputs.predicted
            tests["prediction"] = prediction_drift(
                predicted or inputs.reference_labels, window.labels,
                threshold=cfg.drift_threshold,
                min_reference=min(cfg.min_reference, 20) if predicted else cfg.min_reference,
                min_window=cfg.min_window)
            tests["prediction"].details["reference"] = (
                "predictions on the held-out split" if predicted else "training labels")
        evaluated = [r for r in tests.values() if r.status is not DriftStatus.INSUFFICIENT_DATA]
        drifted = any(r.drifted for r in evaluated) if evaluated else None
        input_summary = drift.to_dict()
        if not inputs.reference_texts:
            input_summary["details"]["reference"] = (
                f"{inputs.champion_ref} has no training file in its lineage, so there is no "
                "reference; versions trained through tuneloop have one")
        prediction_summary = tests["prediction"].to_dict() if "prediction" in tests else None
        new_window = {"new_window": True, "drifted": drifted, "n_window": len(window.texts),
                      "window_end": window.newest or inputs.since,
                      "input_drift": input_summary, "prediction_drift": prediction_summary}
    counts = inputs.counts
    quality = quality_report(
        correct=counts.correct, labeled=counts.labeled, negative=counts.negative,
        rated=counts.rated, baseline_accuracy=inputs.baseline_accuracy,
        baseline_negative_rate=inputs.baseline_negative, threshold=cfg.quality_threshold,
        min_labels=cfg.quality_min_labels, min_ratings=cfg.quality_min_ratings)
    summary = {**quality.to_dict(), "counts": {
        "correct": counts.correct, "labeled": counts.labeled, "negative": counts.negative,
        "rated": counts.rated}}
    unchanged = (inputs.previous_version == inputs.champion_version
                 and inputs.previous_counts == summary["counts"])
    return Observation(tests, drifted, input_summary, prediction_summary, quality, summary,
                       new_window, store_report=new_window is not None or not unchanged)
