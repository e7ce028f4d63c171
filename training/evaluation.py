"""Evaluation metrics and the stable train/eval split. Pure: plain lists in, dicts out.

Classification: accuracy, macro-F1, per-class F1, confusion matrix. Chat: exact match and
ROUGE-L (longest common subsequence over whitespace tokens, implemented here), eval loss and
perplexity. Scoring a model on examples lives in :mod:`training.scoring`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """accuracy, macro_f1, per_class (precision/recall/f1/support), confusion[true][pred].

    Predictions outside ``labels`` count as wrong. Classes with no support and no predictions
    are left out of the macro average (their F1 is undefined).
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} references but {len(y_pred)} predictions")
    confusion = {t: {p: 0 for p in labels} for t in labels}
    for t, p in zip(y_true, y_pred):
        if t in confusion and p in confusion[t]:
            confusion[t][p] += 1
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for label in labels:
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == label and p == label)
        predicted = sum(1 for p in y_pred if p == label)
        support = sum(1 for t in y_true if t == label)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted:
            f1s.append(f1)
    correct = sum(1 for t, p in zip(y_true, y_pred) if t == p)
    return {
        "examples": len(y_true),
        "accuracy": correct / len(y_true) if y_true else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "per_class": per_class,
        "confusion": confusion,
    }


def _tokens(text: str) -> list[str]:
    return text.lower().split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, prediction: str) -> float:
    """ROUGE-L F1 between two texts over lowercased whitespace tokens (0 when either is empty)."""
    ref, pred = _tokens(reference), _tokens(prediction)
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(reference: str, prediction: str) -> bool:
    """Equal after trimming and collapsing whitespace."""
    return " ".join(reference.split()) == " ".join(prediction.split())


def chat_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean exact match and mean ROUGE-L F1 over reference/prediction pairs."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    n = len(references)
    if n == 0:
        return {"examples": 0, "exact_match": 0.0, "rouge_l": 0.0}
    return {
        "examples": n,
        "exact_match": sum(exact_match(r, p) for r, p in zip(references, predictions)) / n,
        "rouge_l": sum(rouge_l(r, p) for r, p in zip(references, predictions)) / n,
    }


def loss_metrics(loss_sum: float, tokens: int) -> dict[str, float]:
    """Mean token loss and its perplexity (exp of the mean), from a summed token loss."""
    if tokens <= 0:
        return {"eval_loss": float("nan"), "perplexity": float("nan"), "eval_tokens": 0}
    mean = loss_sum / tokens
    return {"eval_loss": mean, "perplexity": math.exp(min(mean, 700.0)), "eval_tokens": tokens}


def in_eval_split(key: str, eval_fraction: float, salt: str = "tuneloop") -> bool:
    """Whether ``key`` falls in the eval split: stable across runs, machines and list order."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction


def hash_split(
    items: Sequence[T], key: Callable[[T], str], eval_fraction: float, salt: str = "tuneloop"
) -> tuple[list[T], list[T]]:
    """(train, eval) by hashing each item's key; adding items never moves existing ones."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    train: list[T] = []
    evaluation: list[T] = []
    for item in items:
        (evaluation if in_eval_split(key(item), eval_fraction, salt) else train).append(item)
    return train, evaluation
