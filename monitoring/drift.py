"""Drift tests for one adapter: input drift (texts) and prediction drift (labels).

Input drift is a two-sample permutation test. Reference texts (what the champion was trained on)
and the window (recent production inputs) are mapped to L2-normalised vectors (TF-IDF fitted on
the pooled texts, or any embedding function); the statistic is the linear-kernel MMD, i.e. the
squared distance between the two mean vectors; the p-value comes from relabelling the pooled
sample at random. The feature map is a symmetric function of the pooled texts, so the texts stay
exchangeable under "no drift" and the permutation p-value is exact: at threshold ``a`` the false
alarm rate is at most ``a`` whatever the texts look like. Permutations are evaluated in blocks of
a hundred, one sparse-times-dense product each, which keeps 10,000 texts well under two seconds.

Prediction drift compares label frequencies with a G-test of homogeneity on a 2 x K table with a
pseudo-count per cell, so a label unseen in one sample does not make the statistic infinite.

Below a minimum sample size a report says ``insufficient_data``, never "no drift".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import sparse, stats

EmbedFn = Callable[[Sequence[str]], np.ndarray]
"""Maps texts to a 2-D array, one row per text. Must treat every text independently."""

DEFAULT_THRESHOLD = 0.01
"""p-value below which a window counts as drifted. Alarms trigger retraining, so the default is
stricter than 0.05; the retrain policy adds persistence over several windows on top."""


class DriftStatus(StrEnum):
    """Outcome of one drift test."""

    DRIFT = "drift"
    NO_DRIFT = "no_drift"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class DriftReport:
    """Result of one drift test. ``statistic`` and ``p_value`` are None when data was short."""

    statistic: float | None
    p_value: float | None
    threshold: float
    drifted: bool
    n_reference: int
    n_window: int
    method: str
    status: DriftStatus
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for the store, the API and events)."""
        return {
            "statistic": self.statistic,
            "p_value": self.p_value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_window": self.n_window,
            "method": self.method,
            "status": self.status.value,
            "details": self.details,
        }


def _insufficient(
    n_ref: int, n_win: int, threshold: float, method: str, min_ref: int, min_win: int
) -> DriftReport:
    return DriftReport(
        statistic=None,
        p_value=None,
        threshold=threshold,
        drifted=False,
        n_reference=n_ref,
        n_window=n_win,
        method=method,
        status=DriftStatus.INSUFFICIENT_DATA,
        details={
            "reason": f"need >= {min_ref} reference and >= {min_win} window samples, "
            f"got {n_ref} and {n_win}",
            "min_reference": min_ref,
            "min_window": min_win,
        },
    )


def _check_common(threshold: float, min_reference: int, min_window: int) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if min_reference < 2 or min_window < 2:
        raise ValueError(
            f"min_reference and min_window must be >= 2, got {min_reference} and {min_window}"
        )


def _subsample(texts: Sequence[str], limit: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= limit:
        return list(texts)
    keep = np.sort(rng.choice(len(texts), size=limit, replace=False))
    return [texts[i] for i in keep]


def _tfidf(texts: list[str]) -> tuple[Any, np.ndarray]:
    """(sparse tf-idf matrix, one row per text; the column terms)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    # min_df=2 drops terms seen in one text only: they cannot separate the samples, only add noise.
    vectorizer = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32)
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # empty vocabulary: no term occurs twice in the pooled texts
        return sparse.csr_matrix((len(texts), 1), dtype=np.float32), np.array(["<none>"])
    return matrix, vectorizer.get_feature_names_out()


def _embed(texts: list[str], embed: EmbedFn) -> np.ndarray:
    matrix = np.asarray(embed(texts), dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(texts):
        raise ValueError(
            f"embed must return one row per text (shape ({len(texts)}, d)), got {matrix.shape}"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def _permutation_weights(n_ref: int, n_win: int, n_perm: int, rng: np.random.Generator
                         ) -> np.ndarray:
    """(n_ref + n_win, n_perm) weights, one random relabelling per column.

    A column holds 1/n_win for window members and -1/n_ref for reference members, so
    ``features.T @ column`` is the difference of the two mean vectors.
    """
    n = n_ref + n_win
    weights = np.full((n, n_perm), -1.0 / n_ref, dtype=np.float32)
    # argpartition of uniform noise picks a uniformly random subset per column, vectorised.
    picks = np.argpartition(rng.random((n, n_perm), dtype=np.float32), n_win, axis=0)[:n_win]
    np.put_along_axis(weights, picks, np.float32(1.0 / n_win), axis=0)
    return weights


def _mmd_statistics(features: Any, n_ref: int, n_win: int, n_perm: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """(observed mean difference vector, observed statistic, null statistics)."""
    observed_weights = np.full((n_ref + n_win, 1), -1.0 / n_ref, dtype=np.float32)
    observed_weights[n_ref:] = 1.0 / n_win
    observed_diff = np.asarray(features.T @ observed_weights)[:, 0]
    null = np.empty(n_perm)
    # Chunks bound the memory: (texts x chunk) weights instead of (texts x n_perm).
    chunk = 100
    for start in range(0, n_perm, chunk):
        size = min(chunk, n_perm - start)
        diffs = np.asarray(features.T @ _permutation_weights(n_ref, n_win, size, rng))
        null[start : start + size] = np.einsum("ij,ij->j", diffs, diffs, dtype=np.float64)
    observed = float(np.dot(observed_diff.astype(np.float64), observed_diff))
    return observed_diff, observed, null


def input_drift(
    reference: Sequence[str],
    window: Sequence[str],
    *,
    embed: EmbedFn | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    n_permutations: int = 500,
    min_reference: int = 50,
    min_window: int = 50,
    max_reference: int = 10_000,
    max_window: int = 10_000,
    seed: int = 0,
    top_terms: int = 10,
) -> DriftReport:
    """Test whether ``window`` texts come from the same distribution as ``reference`` texts.

    ``embed`` replaces TF-IDF with any per-text embedding. Samples above ``max_reference`` /
    ``max_window`` are subsampled at random (bounded time). The same inputs and ``seed`` give the
    same report. Raises ValueError on bad parameters or a malformed embedding.
    """
    _check_common(threshold, min_reference, min_window)
    if n_permutations < 19:
        raise ValueError(f"n_permutations must be >= 19 for a usable p-value, got {n_permutations}")
    method = "mmd-linear-" + ("tfidf" if embed is None else "embedding") + "-permutation"
    n_ref_all, n_win_all = len(reference), len(window)
    if n_ref_all < min_reference or n_win_all < min_window:
        return _insufficient(n_ref_all, n_win_all, threshold, method, min_reference, min_window)

    rng = np.random.default_rng(seed)
    ref = _subsample(reference, max_reference, rng)
    win = _subsample(window, max_window, rng)
    n_ref, n_win = len(ref), len(win)
    pooled = ref + win
    if embed is None:
        features, terms = _tfidf(pooled)
    else:
        features, terms = _embed(pooled, embed), None

    observed_diff, observed, null = _mmd_statistics(features, n_ref, n_win, n_permutations, rng)
    # The observed split counts as one of the relabellings: p >= 1 / (B + 1), exact level.
    p_value = float((1 + np.count_nonzero(null >= observed)) / (1 + n_permutations))
    drifted = p_value < threshold

    details: dict[str, Any] = {
        "n_permutations": n_permutations,
        "seed": seed,
        "null_mean": float(null.mean()),
        "null_std": float(null.std()),
        "effect": float(observed / null.mean()) if null.mean() > 0 else None,
        "dimensions": int(features.shape[1]),
        "subsampled": n_ref < n_ref_all or n_win < n_win_all,
    }
    if terms is not None and top_terms > 0:
        order = np.argsort(-np.abs(observed_diff))[:top_terms]
        details["top_terms"] = [
            {"term": str(terms[i]), "shift": round(float(observed_diff[i]), 6)} for i in order
        ]
    return DriftReport(
        statistic=observed,
        p_value=p_value,
        threshold=threshold,
        drifted=drifted,
        n_reference=n_ref_all,
        n_window=n_win_all,
        method=method,
        status=DriftStatus.DRIFT if drifted else DriftStatus.NO_DRIFT,
        details=details,
    )


def _as_counts(labels: Sequence[str] | Mapping[str, int]) -> Counter[str]:
    if isinstance(labels, Mapping):
        counts = Counter({str(k): int(v) for k, v in labels.items()})
        if any(v < 0 for v in counts.values()):
            raise ValueError("label counts must be >= 0")
        return counts
    return Counter(str(label) for label in labels)


def prediction_drift(
    reference: Sequence[str] | Mapping[str, int],
    window: Sequence[str] | Mapping[str, int],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    smoothing: float = 0.5,
    min_reference: int = 50,
    min_window: int = 50,
) -> DriftReport:
    """G-test: do the window's predicted labels follow the reference label distribution?

    Each sample is a sequence of labels or a ``{label: count}`` mapping. ``smoothing`` is added
    to every cell of the labels seen in either sample. Raises ValueError on bad parameters.
    """
    _check_common(threshold, min_reference, min_window)
    if smoothing <= 0:
        raise ValueError(f"smoothing must be > 0 (a pseudo-count per cell), got {smoothing}")
    method = "g-test-labels"
    ref_counts, win_counts = _as_counts(reference), _as_counts(window)
    n_ref, n_win = sum(ref_counts.values()), sum(win_counts.values())
    if n_ref < min_reference or n_win < min_window:
        return _insufficient(n_ref, n_win, threshold, method, min_reference, min_window)

    labels = sorted(set(ref_counts) | set(win_counts))
    ref_share = {label: ref_counts[label] / n_ref for label in labels}
    win_share = {label: win_counts[label] / n_win for label in labels}
    details: dict[str, Any] = {
        "labels": labels,
        "reference_share": ref_share,
        "window_share": win_share,
        "total_variation": 0.5 * sum(abs(ref_share[k] - win_share[k]) for k in labels),
        "unseen_in_reference": [k for k in labels if ref_counts[k] == 0],
        "smoothing": smoothing,
    }
    if len(labels) < 2:  # one label in both samples: nothing can differ
        statistic, p_value = 0.0, 1.0
    else:
        table = np.array(
            [[ref_counts[k] for k in labels], [win_counts[k] for k in labels]], dtype=float
        )
        table += smoothing
        expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
        statistic = float(2.0 * np.sum(table * np.log(table / expected)))
        p_value = float(stats.chi2.sf(statistic, df=len(labels) - 1))
    drifted = p_value < threshold
    return DriftReport(
        statistic=statistic,
        p_value=p_value,
        threshold=threshold,
        drifted=drifted,
        n_reference=n_ref,
        n_window=n_win,
        method=method,
        status=DriftStatus.DRIFT if drifted else DriftStatus.NO_DRIFT,
        details=details,
    )
