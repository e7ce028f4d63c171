"""Metrics and the stable split: pure functions, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from training.evaluation import (
    chat_metrics,
    classification_metrics,
    exact_match,
    hash_split,
    in_eval_split,
    lcs_length,
    loss_metrics,
    rouge_l,
)


def test_classification_metrics_by_hand():
    y_true = ["a", "a", "b", "b", "c"]
    y_pred = ["a", "b", "b", "b", "a"]
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(3 / 5)
    # a: P=1/2 R=1/2 F=1/2; b: P=2/3 R=1 F=0.8; c: 0
    assert m["per_class"]["a"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["c"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"]["a"] == {"a": 1, "b": 1, "c": 0}
    assert m["confusion"]["c"] == {"a": 1, "b": 0, "c": 0}


def test_classification_metrics_agree_with_sklearn():
    from sklearn.metrics import f1_score

    y_true = list("aabbccabcabc")
    y_pred = list("abbbcaabccba")
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))


def test_classification_metrics_length_mismatch():
    with pytest.raises(ValueError):
        classification_metrics(["a"], [], ["a"])


def test_lcs_and_rouge_l():
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "d", "e"]) == 3
    assert lcs_length([], ["x"]) == 0
    # LCS 3, P = 3/4, R = 3/4
    assert rouge_l("the cat sat down", "the cat lay down") == pytest.approx(0.75)
    assert rouge_l("Same Words", "same words") == 1.0
    assert rouge_l("", "x") == 0.0


def test_exact_match_and_chat_metrics():
    assert exact_match(" Hello  world ", "Hello world")
    assert not exact_match("Hello", "hello")
    m = chat_metrics(["a b", "c d"], ["a b", "c x"])
    assert m["exact_match"] == 0.5
    assert m["rouge_l"] == pytest.approx((1.0 + 0.5) / 2)


def test_loss_metrics():
    m = loss_metrics(math.log(4) * 10, 10)
    assert m["eval_loss"] == pytest.approx(math.log(4))
    assert m["perplexity"] == pytest.approx(4.0)
    assert math.isnan(loss_metrics(0.0, 0)["perplexity"])


def test_hash_split_is_stable_and_order_independent():
    items = [f"text {i}" for i in range(1000)]
    train, held = hash_split(items, key=str, eval_fraction=0.2)
    assert 150 < len(held) < 250
    assert set(train) | set(held) == set(items)
    _, shuffled_held = hash_split(list(reversed(items)), key=str, eval_fraction=0.2)
    assert set(shuffled_held) == set(held)
    # adding items never moves existing ones
    _, more_held = hash_split(items + ["new one"], key=str, eval_fraction=0.2)
    assert set(held) <= set(more_held)
    assert in_eval_split("x", 0.0) is False
    with pytest.raises(ValueError):
        hash_split(items, key=str, eval_fraction=1.0)
