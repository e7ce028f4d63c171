"""Evaluation metrics and the stable train/eval split. Pure: plain lists in, dicts out.

Classification (scikit-learn): accuracy, macro-F1, per-class precision/recall/F1/support and the
confusion matrix, all 0-1 except counts. Chat: exact match (0-1), ROUGE-L F-measure
(rouge-score, mean over replies, 0-1) and corpus BLEU (sacrebleu, 0-100 as sacrebleu reports
it) of replies; eval loss, perplexity and token accuracy of the teacher-forced pass. Scoring a
model on examples lives in :mod:`training.scoring`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

MAX_SAMPLES = 5
"""Held-out replies kept with an evaluation (``samples``), so a person can read some."""
SAMPLE_CHARS = 2000
"""Each string of a stored sample is cut to this many characters (metrics stay small)."""


def classification_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]
) -> dict[str, Any]:
    """accuracy, macro_f1, per_class (precision/recall/f1/support), confusion[true][pred].

    Predictions outside ``labels`` count as wrong. Classes with no support and no predictions
    are left out of the macro average (their F1 is undefined); other undefined ratios are 0.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} references but {len(y_pred)} predictions")
    labels = list(labels)
    true, pred = list(y_true), list(y_pred)
    confusion = {t: dict.fromkeys(labels, 0) for t in labels}
    per_class = {label: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
                 for label in labels}
    if not true:
        return {"examples": 0, "accuracy": 0.0, "macro_f1": 0.0, "per_class": per_class,
                "confusion": confusion}
    if labels:
        precision, recall, f1, support = precision_recall_fscore_support(
            true, pred, labels=labels, zero_division=0)
        for i, label in enumerate(labels):
            per_class[label] = {"precision": float(precision[i]), "recall": float(recall[i]),
                                "f1": float(f1[i]), "support": int(support[i])}
    if set(true) & set(labels):  # confusion_matrix refuses labels none of which is true
        matrix = confusion_matrix(true, pred, labels=labels)
        confusion = {t: {p: int(matrix[i][j]) for j, p in enumerate(labels)}
                     for i, t in enumerate(labels)}
    present = [label for label in labels if label in set(true) | set(pred)]
    macro = f1_score(true, pred, labels=present, average="macro", zero_division=0) \
        if present else 0.0
    return {
        "examples": len(true),
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(macro),
        "per_class": per_class,
        "confusion": confusion,
    }


class _WordTokenizer:
    """rouge-score's tokenizer without its ASCII-only filter: lowercased runs of Unicode letters
    and digits (the same tokens as rouge-score's default on ASCII text, no stemming)."""

    _word = re.compile(r"[^\W_]+")

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(text.lower())


def rouge_l_scores(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """ROUGE-L F-measure of each prediction against its reference (rouge-score; 0 when either
    has no word)."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rougeL"], use_stemmer=False, tokenizer=_WordTokenizer())
    return [float(scorer.score(r, p)["rougeL"].fmeasure) for r, p in zip(references, predictions)]


def bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Corpus BLEU, 0-100 (sacrebleu's defaults: 13a tokenizer, one reference per reply)."""
    from sacrebleu.metrics import BLEU

    return float(BLEU().corpus_score(list(predictions), [list(references)]).score)


def exact_match(reference: str, prediction: str) -> bool:
    """Equal after trimming and collapsing whitespace."""
    return " ".join(reference.split()) == " ".join(prediction.split())


def chat_metrics(references: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Mean exact match (0-1), mean ROUGE-L F-measure (0-1) and corpus BLEU (0-100) over
    reference/prediction pairs."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    n = len(references)
    if n == 0:
        return {"examples": 0, "exact_match": 0.0, "rouge_l": 0.0, "bleu": 0.0}
    return {
        "examples": n,
        "exact_match": sum(exact_match(r, p) for r, p in zip(references, predictions)) / n,
        "rouge_l": sum(rouge_l_scores(references, predictions)) / n,
        "bleu": bleu(references, predictions),
    }


def last_turn(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """(the conversation before its last assistant message, that message's content): what a
    model replies to and the reference reply. Raises ValueError without an assistant message."""
    found = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if not found:
        raise ValueError("the conversation has no assistant message to use as the reference")
    return list(messages[:found[-1]]), str(messages[found[-1]].get("content") or "")


def prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message ("" when there is none)."""
    users = [m for m in messages if m.get("role") == "user"]
    return str(users[-1].get("content") or "") if users else ""


def reply_samples(prompts: Sequence[Sequence[dict[str, Any]]], references: Sequence[str],
                  limit: int = MAX_SAMPLES, **replies: Sequence[str | None] | None
                  ) -> list[dict[str, str | None]]:
    """The first ``limit`` held-out examples side by side: ``{"prompt", "reference", <each
    keyword>}``; prompt is the last user message; strings cut to :data:`SAMPLE_CHARS`.
    A keyword given None (a model that was not asked) is None in every sample."""
    def cut(text: str | None) -> str | None:
        return None if text is None else text[:SAMPLE_CHARS]

    out: list[dict[str, str | None]] = []
    for i, (messages, reference) in enumerate(list(zip(prompts, references))[:limit]):
        sample: dict[str, str | None] = {"prompt": cut(prompt_text(messages)),
                                         "reference": cut(reference)}
        for name, texts in replies.items():
            sample[name] = cut(texts[i]) if texts is not None and i < len(texts) else None
        out.append(sample)
    return out


def loss_metrics(loss_sum: float, tokens: int, correct: int | None = None) -> dict[str, float]:
    """Mean token loss and its perplexity (exp of the mean), from a summed token loss; with
    ``correct`` (targets that were the argmax) also ``token_accuracy``, 0-1."""
    if tokens <= 0:
        out = {"eval_loss": float("nan"), "perplexity": float("nan"), "eval_tokens": 0}
        return out if correct is None else {**out, "token_accuracy": float("nan")}
    mean = loss_sum / tokens
    out = {"eval_loss": mean, "perplexity": math.exp(min(mean, 700.0)), "eval_tokens": tokens}
    return out if correct is None else {**out, "token_accuracy": correct / tokens}


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
