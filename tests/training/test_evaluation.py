"""Metrics and the stable split: pure functions, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from training.evaluation import (
    SAMPLE_CHARS,
    bleu,
    chat_metrics,
    classification_metrics,
    exact_match,
    hash_split,
    in_eval_split,
    last_turn,
    loss_metrics,
    prompt_text,
    reply_samples,
    rouge_l_scores,
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


def test_classification_metrics_with_a_label_never_predicted():
    y_true = ["a", "a", "b", "b", "c", "c"]
    y_pred = ["a", "b", "b", "a", "b", "b"]  # c is never predicted
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    # a: 1 of 2 predictions right, 1 of 2 found; b: 1 of 4 right, 1 of 2 found; c: none.
    assert m["examples"] == 6
    assert m["accuracy"] == pytest.approx(2 / 6)
    assert m["per_class"]["a"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["b"] == pytest.approx(
        {"precision": 0.25, "recall": 0.5, "f1": 2 * 0.25 * 0.5 / 0.75, "support": 2})
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((0.5 + 1 / 3 + 0.0) / 3)
    assert m["confusion"] == {"a": {"a": 1, "b": 1, "c": 0},
                              "b": {"a": 1, "b": 1, "c": 0},
                              "c": {"a": 0, "b": 2, "c": 0}}
    # plain numbers (JSON), not numpy scalars
    assert type(m["accuracy"]) is float and type(m["per_class"]["a"]["support"]) is int
    assert type(m["confusion"]["a"]["a"]) is int


def test_classification_metrics_unknown_predictions_and_absent_labels():
    m = classification_metrics(["a", "b"], ["a", "other"], ["a", "b", "c", "d"])
    assert m["accuracy"] == 0.5  # a prediction outside the labels is wrong
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    # c and d have neither support nor predictions: left out of the average of a (1) and b (0)
    assert m["macro_f1"] == pytest.approx(0.5)
    assert m["confusion"]["b"] == {"a": 0, "b": 0, "c": 0, "d": 0}
    assert m["confusion"]["a"] == {"a": 1, "b": 0, "c": 0, "d": 0}


def test_classification_metrics_empty_and_length_mismatch():
    m = classification_metrics([], [], ["a", "b"])
    assert (m["examples"], m["accuracy"], m["macro_f1"]) == (0, 0.0, 0.0)
    assert m["confusion"] == {"a": {"a": 0, "b": 0}, "b": {"a": 0, "b": 0}}
    with pytest.raises(ValueError):
        classification_metrics(["a"], [], ["a"])


def test_rouge_l():
    # LCS "the cat down" = 3 of 4 tokens each way: P = R = F = 3/4
    assert rouge_l_scores(["the cat sat down"], ["the cat lay down"]) == [pytest.approx(0.75)]
    # lowercased, punctuation dropped (rouge-score's tokens), no stemming
    assert rouge_l_scores(["Same, Words!"], ["same words"]) == [1.0]
    assert rouge_l_scores(["cats sat"], ["cat sat"]) == [pytest.approx(0.5)]
    assert rouge_l_scores(["", "x"], ["x", ""]) == [0.0, 0.0]
    # letters outside ASCII are words too (rouge-score's default tokenizer drops them)
    assert rouge_l_scores(["café crème"], ["café noir"]) == [pytest.approx(0.5)]
    assert rouge_l_scores(["日本 語"], ["日本 語"]) == [1.0]


def test_bleu_is_corpus_bleu_0_to_100():
    hyp, ref = "the cat sat on the mat", "the cat sat on a mat"
    # clipped n-gram matches: 5/6, 3/5, 2/4, 1/3; same length, so no brevity penalty
    assert bleu([ref], [hyp]) == pytest.approx(100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25)
    assert bleu(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    # corpus: counts are summed over replies (9/10, 6/8, 4/6, 2/4), not sentence scores averaged
    both = bleu([ref, "a b c d"], [hyp, "a b c d"])
    assert both == pytest.approx(100 * (9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25)
    # a reply too short to have 3- and 4-grams scores 0 (sacrebleu smooths zero matches only)
    assert bleu(["a b c d"], ["a b"]) == 0.0


def test_exact_match_and_chat_metrics():
    assert exact_match(" Hello  world ", "Hello world")
    assert not exact_match("Hello", "hello")
    m = chat_metrics(["a b", "c d"], ["a b", "c x"])
    assert m["examples"] == 2
    assert m["exact_match"] == 0.5
    assert m["rouge_l"] == pytest.approx((1.0 + 0.5) / 2)
    # unigrams 3/4, bigrams 1/2, no 3-grams: corpus BLEU 0
    assert m["bleu"] == 0.0
    assert chat_metrics([], []) == {"examples": 0, "exact_match": 0.0, "rouge_l": 0.0,
                                    "bleu": 0.0}
    with pytest.raises(ValueError):
        chat_metrics(["a"], [])


def test_samples_are_the_last_user_message_cut_to_2000_characters():
    conversation = [{"role": "system", "content": "be brief"},
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "one"},
                    {"role": "user", "content": "x" * 2500},
                    {"role": "assistant", "content": "y" * 3000}]
    prompt, reference = last_turn(conversation)
    assert prompt == conversation[:4] and reference == "y" * 3000
    assert prompt_text(prompt) == "x" * 2500 and prompt_text([]) == ""
    with pytest.raises(ValueError):
        last_turn([{"role": "user", "content": "no reply"}])
    found = reply_samples([prompt] * 7, [reference] * 7, candidate=["z" * 2001] * 7,
                          champion=None)
    assert len(found) == 5
    assert found[0] == {"prompt": "x" * SAMPLE_CHARS, "reference": "y" * SAMPLE_CHARS,
                        "candidate": "z" * SAMPLE_CHARS, "champion": None}
    assert SAMPLE_CHARS == 2000
    assert reply_samples([prompt], [reference], candidate=["short"])[0]["candidate"] == "short"


def test_token_accuracy_counts_argmax_hits_on_target_tokens():
    import torch

    from training.scoring import argmax_hits

    # position p predicts token p + 1; -100 targets are not counted
    logits = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[-100, 2, 0, -100]])  # hit (2), miss (argmax 1 vs 0), ignored
    assert argmax_hits(logits, labels) == 1
    m = loss_metrics(3.0, 4, correct=3)
    assert m["token_accuracy"] == 0.75 and m["eval_loss"] == 0.75
    assert math.isnan(loss_metrics(0.0, 0, correct=0)["token_accuracy"])
    assert "token_accuracy" not in loss_metrics(1.0, 1)


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
