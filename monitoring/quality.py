"""Quality of a champion from feedback: accuracy on labeled feedback and negative-rating rate.

Each metric is a proportion with a Wilson confidence interval, compared with the value measured
when the champion was promoted (its baseline). "Worse" means a one-sided test says the current
proportion is significantly worse than the baseline: a two-proportion z-test when the baseline
came with its sample size, an exact binomial test against a fixed value otherwise. Below a
minimum sample size the check says ``insufficient_data``, never "ok".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from scipy import stats

DEFAULT_THRESHOLD = 0.01
"""p-value below which a drop counts: a drop triggers retraining or a rollback, so be strict."""


class QualityStatus(StrEnum):
    """Outcome of one quality check (and of a report: the worst of its checks)."""

    DEGRADED = "degraded"
    OK = "ok"
    NO_BASELINE = "no_baseline"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class Baseline:
    """A metric's value when the champion was promoted; ``n`` its sample size if known."""

    value: float
    n: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"baseline value must be a proportion in [0, 1], got {self.value}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"baseline n must be >= 1 or None, got {self.n}")


@dataclass(frozen=True)
class ProportionCheck:
    """One metric (a proportion) against its baseline."""

    metric: str
    higher_is_better: bool
    successes: int
    n: int
    value: float | None
    ci_low: float | None
    ci_high: float | None
    baseline: float | None
    baseline_n: int | None
    p_value: float | None
    threshold: float
    worse: bool
    status: QualityStatus


@dataclass(frozen=True)
class QualityReport:
    """All quality checks of one adapter version; ``degraded`` if any check is significantly worse."""

    checks: dict[str, ProportionCheck]
    degraded: bool
    status: QualityStatus
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for the store, the API and events)."""
        checks = {}
        for name, check in self.checks.items():
            checks[name] = {**asdict(check), "status": check.status.value}
        return {
            "checks": checks,
            "degraded": self.degraded,
            "status": self.status.value,
            "details": self.details,
        }


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when ``n`` is 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def worse_than_baseline_p(
    successes: int, n: int, baseline: Baseline, *, higher_is_better: bool = True
) -> float:
    """One-sided p-value of "the current proportion is worse than the baseline".

    Two-proportion z-test (pooled) when ``baseline.n`` is known, else an exact binomial test
    against ``baseline.value``.
    """
    if n == 0:
        return 1.0
    if baseline.n is None:
        alternative = "less" if higher_is_better else "greater"
        return float(stats.binomtest(successes, n, baseline.value, alternative=alternative).pvalue)
    base_successes = round(baseline.value * baseline.n)
    pooled = (successes + base_successes) / (n + baseline.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / baseline.n))
    if se == 0:  # both samples all-success or all-failure: no evidence of a change
        return 1.0
    z = (successes / n - base_successes / baseline.n) / se
    return float(stats.norm.cdf(z) if higher_is_better else stats.norm.sf(z))


def check_proportion(
    metric: str,
    successes: int,
    n: int,
    baseline: Baseline | None,
    *,
    higher_is_better: bool,
    threshold: float = DEFAULT_THRESHOLD,
    min_n: int = 30,
    min_effect: float = 0.0,
    confidence: float = 0.95,
) -> ProportionCheck:
    """Compare ``successes / n`` with ``baseline``; worse needs p < threshold and a gap >= min_effect."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if min_n < 1 or min_effect < 0:
        raise ValueError(f"need min_n >= 1 and min_effect >= 0, got {min_n} and {min_effect}")
    value = successes / n if n else None
    low, high = wilson_interval(successes, n, confidence)
    p_value: float | None = None
    worse = False
    if n < min_n:
        status = QualityStatus.INSUFFICIENT_DATA
    elif baseline is None:
        status = QualityStatus.NO_BASELINE
    else:
        assert value is not None  # n >= min_n >= 1
        p_value = worse_than_baseline_p(successes, n, baseline, higher_is_better=higher_is_better)
        gap = (baseline.value - value) if higher_is_better else (value - baseline.value)
        worse = p_value < threshold and gap >= min_effect
        status = QualityStatus.DEGRADED if worse else QualityStatus.OK
    return ProportionCheck(
        metric=metric,
        higher_is_better=higher_is_better,
        successes=successes,
        n=n,
        value=value,
        ci_low=low if n else None,
        ci_high=high if n else None,
        baseline=None if baseline is None else baseline.value,
        baseline_n=None if baseline is None else baseline.n,
        p_value=p_value,
        threshold=threshold,
        worse=worse,
        status=status,
    )


def accuracy_counts(predicted: Sequence[str], actual: Sequence[str]) -> tuple[int, int]:
    """(correct, total) for paired predicted and feedback labels."""
    if len(predicted) != len(actual):
        raise ValueError(
            f"predicted and actual labels must pair up, got {len(predicted)} and {len(actual)}"
        )
    return sum(p == a for p, a in zip(predicted, actual)), len(actual)


_STATUS_ORDER = [
    QualityStatus.DEGRADED,
    QualityStatus.OK,
    QualityStatus.NO_BASELINE,
    QualityStatus.INSUFFICIENT_DATA,
]


def quality_report(
    *,
    correct: int = 0,
    labeled: int = 0,
    negative: int = 0,
    rated: int = 0,
    baseline_accuracy: Baseline | None = None,
    baseline_negative_rate: Baseline | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    min_labels: int = 30,
    min_ratings: int = 30,
    min_effect: float = 0.0,
) -> QualityReport:
    """Accuracy (``correct`` of ``labeled``) and negative-rating rate (``negative`` of ``rated``).

    The report is degraded if either metric is significantly worse than its baseline; its
    status is the most telling of the checks (degraded > ok > no_baseline > insufficient_data).
    """
    checks = {
        "accuracy": check_proportion(
            "accuracy", correct, labeled, baseline_accuracy, higher_is_better=True,
            threshold=threshold, min_n=min_labels, min_effect=min_effect,
        ),
        "negative_rate": check_proportion(
            "negative_rate", negative, rated, baseline_negative_rate, higher_is_better=False,
            threshold=threshold, min_n=min_ratings, min_effect=min_effect,
        ),
    }
    degraded = any(c.worse for c in checks.values())
    status = min((c.status for c in checks.values()), key=_STATUS_ORDER.index)
    worse = [name for name, c in checks.items() if c.worse]
    return QualityReport(
        checks=checks, degraded=degraded, status=status, details={"worse_metrics": worse}
    )
