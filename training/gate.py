"""The gate: may a candidate adapter version replace the champion? One pure decision for both
places that ask, on metrics already measured (no store, no model):

- publishing a fine-tuning job (:mod:`training.jobs.publish`, ``min_improvement=None``): the
  candidate must be at least as good as the champion (ties pass) or, for an adapter with no
  champion yet, as the base model, on the job's held-out split;
- the monitor's promotion (:mod:`monitoring.retrain`, ``min_improvement`` a number): the
  candidate must beat the champion on the new eval split by more than ``min_improvement`` and be
  no more than ``tolerance`` worse on the previous split; with no champion it passes.

The metric is accuracy for classification (higher is better), eval loss for chat (lower).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from services.store.models import AdapterTask

EPSILON = 1e-9  # ties pass: float noise must not fail an identical model
PROBABILITY_FLOOR = 1e-12

_LOWER_IS_BETTER = ("loss", "perplexity", "error", "negative_rate")

SplitMetrics = Mapping[str, Mapping[str, float]]
"""Metrics per eval split: ``{split_name: {metric_name: value}}``."""


class GateReason(StrEnum):
    """Why the gate passed or failed."""

    # at least as good (min_improvement=None)
    BEATS_CHAMPION = "beats_champion"
    TIES_CHAMPION = "ties_champion"
    WORSE_THAN_CHAMPION = "worse_than_champion"
    BEATS_BASE = "beats_base"  # no champion to compare with
    WORSE_THAN_BASE = "worse_than_base"
    NOT_EVALUATED = "not_evaluated"  # no held-out metric: nothing to decide on
    # better by more than min_improvement, within tolerance on the previous split
    PASSED = "passed"
    NO_CHAMPION = "no_champion"
    NO_IMPROVEMENT = "no_improvement"
    REGRESSION = "regression"
    FORGETTING = "forgetting"  # its label distribution moved too far from the champion's
    MISSING_METRIC = "missing_metric"


def gate_metric(task: str) -> tuple[str, bool]:
    """(metric, higher is better) for a task."""
    return ("accuracy", True) if task == AdapterTask.CLASSIFICATION else ("eval_loss", False)


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on the new split's values. ``new_delta``/``previous_delta``: candidate
    minus champion, signed so that > 0 is better (None without a champion value)."""

    passed: bool
    reason: GateReason
    message: str
    metric: str
    higher_is_better: bool
    candidate: float | None = None
    base: float | None = None
    champion: float | None = None
    champion_version: str | None = None
    new_delta: float | None = None
    previous_delta: float | None = None
    forgetting: float | None = None
    """Mean KL divergence of the candidate's label distribution from the champion's on the
    champion's held-out texts (nats; None: not measured)."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": str(self.reason)}


def label_kl(reference: Sequence[Mapping[str, float]], candidate: Sequence[Mapping[str, float]]
             ) -> float:
    """Mean over texts of KL(reference || candidate) between two label distributions per text
    (nats; a probability under ``PROBABILITY_FLOOR`` counts as the floor). How far the candidate
    moved from the champion on the champion's own texts: 0 for the same model."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference but {len(candidate)} candidate distributions")
    if not reference:
        raise ValueError("no texts to compare the label distributions on")
    total = 0.0
    for ref, cand in zip(reference, candidate):
        for label, p in ref.items():
            if p > 0:
                total += p * math.log(p / max(cand.get(label, 0.0), PROBABILITY_FLOOR))
    return max(0.0, total / len(reference))


def _value(metrics: SplitMetrics | None, split: str | None, metric: str) -> float | None:
    found = (metrics or {}).get(split or "", {}).get(metric)
    return float(found) if isinstance(found, int | float) else None


def decide_gate(
    candidate: SplitMetrics,
    champion: SplitMetrics | None,
    new_split: str,
    *,
    metric: str,
    higher_is_better: bool | None = None,
    base: SplitMetrics | None = None,
    champion_version: str | None = None,
    previous_split: str | None = None,
    tolerance: float = 0.0,
    min_improvement: float | None = None,
    forgetting: float | None = None,
    max_forgetting: float | None = None,
) -> GateDecision:
    """Compare ``candidate`` with ``champion`` (else ``base``) on ``metric`` (see the module).

    ``higher_is_better`` defaults from the metric name (loss/perplexity/error: lower). The
    previous split is skipped when None or the champion has no value there. Raises ValueError
    for a negative ``tolerance`` or ``min_improvement``. ``forgetting`` (see
    :func:`label_kl`) is reported; above ``max_forgetting`` it fails a candidate that would
    otherwise pass (min_improvement mode).
    """
    if tolerance < 0 or (min_improvement is not None and min_improvement < 0):
        raise ValueError(
            f"tolerance and min_improvement must be >= 0, got {tolerance} and {min_improvement}"
        )
    if higher_is_better is None:
        higher_is_better = not any(word in metric for word in _LOWER_IS_BETTER)
    higher = higher_is_better
    sign = 1.0 if higher else -1.0
    cand_new, champ_new = _value(candidate, new_split, metric), _value(champion, new_split, metric)
    base_new = _value(base, new_split, metric)
    fields: dict[str, Any] = {
        "metric": metric, "higher_is_better": higher, "candidate": cand_new, "base": base_new,
        "champion": champ_new, "champion_version": champion_version, "forgetting": forgetting}
    if min_improvement is None:
        return _at_least_as_good(fields, sign)
    if not champion:
        return GateDecision(True, GateReason.NO_CHAMPION, "no champion to beat: candidate passes",
                            **fields)
    if cand_new is None or champ_new is None:
        who = "candidate" if cand_new is None else "champion"
        return GateDecision(
            False, GateReason.MISSING_METRIC,
            f"{who} has no {metric!r} on split {new_split!r}: evaluate both on the new eval split",
            **fields,
        )
    new_delta = sign * (cand_new - champ_new)

    previous_delta = None
    if previous_split is not None:
        cand_prev = _value(candidate, previous_split, metric)
        champ_prev = _value(champion, previous_split, metric)
        if cand_prev is None and champ_prev is not None:
            return GateDecision(
                False, GateReason.MISSING_METRIC,
                f"candidate has no {metric!r} on the previous split {previous_split!r}",
                new_delta=new_delta, **fields,
            )
        if cand_prev is not None and champ_prev is not None:
            previous_delta = sign * (cand_prev - champ_prev)

    if new_delta <= min_improvement:
        return GateDecision(
            False, GateReason.NO_IMPROVEMENT,
            f"{metric} on {new_split!r}: candidate {cand_new:.4g} vs champion {champ_new:.4g}, "
            f"needs to be better by more than {min_improvement:g}",
            new_delta=new_delta, previous_delta=previous_delta, **fields,
        )
    if previous_delta is not None and previous_delta < -tolerance:
        return GateDecision(
            False, GateReason.REGRESSION,
            f"{metric} on previous split {previous_split!r} regressed by {-previous_delta:.4g} "
            f"(tolerance {tolerance:g})",
            new_delta=new_delta, previous_delta=previous_delta, **fields,
        )
    if max_forgetting is not None and forgetting is not None and forgetting > max_forgetting:
        return GateDecision(
            False, GateReason.FORGETTING,
            f"its label distribution on previous split {previous_split!r} moved from the "
            f"champion's by KL {forgetting:.4g} nats (allowed {max_forgetting:g}): it forgets "
            "what the champion knew",
            new_delta=new_delta, previous_delta=previous_delta, **fields,
        )
    return GateDecision(
        True, GateReason.PASSED,
        f"{metric} on {new_split!r} better by {new_delta:.4g}"
        + ("" if previous_delta is None else f"; previous split delta {previous_delta:+.4g}")
        + ("" if forgetting is None else f"; label KL from the champion {forgetting:.4g}"),
        new_delta=new_delta, previous_delta=previous_delta, **fields,
    )


def _at_least_as_good(fields: dict[str, Any], sign: float) -> GateDecision:
    """Ties pass; with no champion value the base is the reference."""
    metric, candidate, champion = fields["metric"], fields["candidate"], fields["champion"]
    if candidate is None:
        return GateDecision(False, GateReason.NOT_EVALUATED, message=(
            f"no held-out {metric} for the candidate, so it cannot be compared; give a "
            "validation_file (or keep eval_fraction > 0) to gate it"), **fields)
    reference, name = (champion, f"champion {fields['champion_version']}") \
        if champion is not None else (fields["base"], "base model")
    if reference is None:
        return GateDecision(False, GateReason.NOT_EVALUATED, message=(
            f"candidate {metric} {candidate:.4f}, but there is neither a champion nor a base "
            "score to compare with"), **fields)
    margin = sign * (candidate - reference)
    if champion is not None:
        reason = (GateReason.BEATS_CHAMPION if margin > EPSILON else
                  GateReason.TIES_CHAMPION if margin >= -EPSILON else
                  GateReason.WORSE_THAN_CHAMPION)
    else:
        reason = GateReason.BEATS_BASE if margin >= -EPSILON else GateReason.WORSE_THAN_BASE
    passed = reason in (GateReason.BEATS_CHAMPION, GateReason.TIES_CHAMPION,
                        GateReason.BEATS_BASE)
    verdict = "passed" if passed else "failed"
    return GateDecision(passed, reason, message=(
        f"gate {verdict}: candidate {metric} {candidate:.4f} vs {name} {reference:.4f} "
        f"({'higher' if fields['higher_is_better'] else 'lower'} is better)"),
        new_delta=None if champion is None else margin, **fields)
