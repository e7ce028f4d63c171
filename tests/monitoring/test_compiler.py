"""Dataset compiler: examples from feedback, exclusions, dedup, split, replay, versions."""

from __future__ import annotations

import json
import random

import pytest

from monitoring.compiler import (
    CompileConfig,
    ResponseFeedback,
    ServedResponse,
    compile_dataset,
    example_key,
)
from monitoring.request_log import loggable
from tests.support.drift_data import texts_by_domain
from training.datasets import validate_chat_dataset, validate_classification_dataset

LABELS = ("negative", "neutral", "positive")


def classify_request(i: int, text: str, output: str = "neutral") -> ServedResponse:
    return ServedResponse(id=f"req-{i}", task="classification", input=text, output=output)


def chat_request(i: int, prompt: str, reply: str) -> ServedResponse:
    return ServedResponse(
        id=f"chat-{i}", task="chat",
        input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}],
        output=reply,
    )


def test_classification_examples_from_labels_and_positive_ratings():
    requests = [classify_request(1, "I love it", "positive"), classify_request(2, "meh", "positive"),
                classify_request(3, "awful", "positive"), classify_request(4, "ok", "neutral")]
    feedback = [
        ResponseFeedback("req-1", rating=1),
        ResponseFeedback("req-2", label="neutral"),
        ResponseFeedback("req-3", rating=-1),
        ResponseFeedback("req-4", comment="no opinion"),
    ]
    ds = compile_dataset("classification", requests, feedback,
                         config=CompileConfig(eval_fraction=0.0, labels=LABELS))
    assert sorted(map(json.dumps, ds.records("train"))) == sorted(map(json.dumps, [
        {"text": "I love it", "label": "positive"}, {"text": "meh", "label": "neutral"}]))
    assert ds.counts["from_rating"] == 1 and ds.counts["from_label"] == 1
    assert ds.counts["negative_without_label"] == 1
    assert ds.counts["no_usable_feedback"] == 1
    assert {e.request_id: e.source for e in ds.train} == {"req-1": "rating", "req-2": "label"}


def test_chat_examples_from_corrections_and_positive_replies():
    requests = [chat_request(1, "capital of France?", "Paris."),
                chat_request(2, "2+2?", "5"), chat_request(3, "hi", "go away")]
    feedback = [
        {"response_id": "chat-1", "rating": 1},
        {"response_id": "chat-2", "rating": -1, "correction": "4"},
        {"response_id": "chat-3", "rating": -1, "comment": "rude"},
    ]
    ds = compile_dataset("chat", requests, feedback, config=CompileConfig(eval_fraction=0.0))
    by_request = {e.request_id: e.payload for e in ds.train}
    assert by_request["chat-1"]["messages"][-1] == {"role": "assistant", "content": "Paris."}
    assert by_request["chat-2"]["messages"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"}]
    assert "chat-3" not in by_request
    assert ds.counts["negative_without_correction"] == 1
    assert ds.counts["from_correction"] == 1 and ds.counts["from_rating"] == 1


def test_outputs_pass_the_training_validators():
    requests = [classify_request(i, f"text number {i}", "positive") for i in range(40)]
    requests += [chat_request(i, f"question {i}", f"answer {i}") for i in range(40)]
    feedback = [ResponseFeedback(f"req-{i}", label=LABELS[i % 3]) for i in range(40)]
    feedback += [ResponseFeedback(f"chat-{i}", rating=1) for i in range(40)]
    config = CompileConfig(eval_fraction=0.25, labels=LABELS)
    cls = compile_dataset("classification", requests, feedback, config=config)
    chat = compile_dataset("chat", requests, feedback, config=config)
    for split in ("train", "eval"):
        assert validate_classification_dataset(cls.jsonl(split), labels=list(LABELS)).ok
        assert validate_chat_dataset(chat.jsonl(split)).ok
    assert cls.counts["other_task_requests"] == 40 and cls.counts["feedback_other_task"] == 40


def test_feedback_on_unknown_response_and_labels_outside_the_set():
    ds = compile_dataset(
        "classification", [classify_request(1, "x y")],
        [ResponseFeedback("nope", label="positive"), ResponseFeedback("req-1", label="angry")],
        config=CompileConfig(labels=LABELS),
    )
    assert ds.counts["feedback_unknown_response"] == 1
    assert ds.counts["label_outside_label_set"] == 1
    assert ds.counts["train"] + ds.counts["eval"] == 0


def test_latest_feedback_wins():
    feedback = [
        ResponseFeedback("req-1", label="negative", id="a", created_at="2026-11-01T10:00:00"),
        ResponseFeedback("req-1", label="positive", id="b", created_at="2026-11-02T10:00:00"),
    ]
    for order in (feedback, feedback[::-1]):
        ds = compile_dataset("classification", [classify_request(1, "fine")], order,
                             config=CompileConfig(eval_fraction=0.0))
        assert ds.records("train") == [{"text": "fine", "label": "positive"}]


def test_duplicate_texts_are_merged_and_conflicts_counted():
    requests = [classify_request(1, "Great  phone"), classify_request(2, "great phone"),
                classify_request(3, "GREAT PHONE")]
    feedback = [
        ResponseFeedback("req-1", label="positive", created_at="2026-11-01"),
        ResponseFeedback("req-2", label="positive", created_at="2026-11-02"),
        ResponseFeedback("req-3", label="negative", created_at="2026-11-03"),
    ]
    ds = compile_dataset("classification", requests, feedback,
                         config=CompileConfig(eval_fraction=0.0))
    assert [e.request_id for e in ds.train] == ["req-3"]
    assert ds.counts["duplicates"] == 2 and ds.counts["conflicts"] == 1


def test_deterministic_and_order_independent():
    texts = texts_by_domain()["product_review"][:300]
    requests = [classify_request(i, t) for i, t in enumerate(texts)]
    feedback = [ResponseFeedback(f"req-{i}", label=LABELS[i % 3], id=f"fb-{i}")
                for i in range(len(texts))]
    first = compile_dataset("classification", requests, feedback)
    random.Random(0).shuffle(requests)
    random.Random(1).shuffle(feedback)
    second = compile_dataset("classification", requests, feedback)
    assert first == second
    assert len(first.version) == 64


def test_version_changes_with_content_only():
    requests = [classify_request(i, f"text {i}") for i in range(20)]
    feedback = [ResponseFeedback(f"req-{i}", label="positive") for i in range(20)]
    base = compile_dataset("classification", requests, feedback)
    renamed = [ServedResponse(f"other-{r.id}", r.task, r.input, r.output) for r in requests]
    refeed = [ResponseFeedback(f"other-{f.response_id}", label=f.label) for f in feedback]
    assert compile_dataset("classification", renamed, refeed).version == base.version
    changed = feedback[:-1] + [ResponseFeedback("req-19", label="negative")]
    assert compile_dataset("classification", requests, changed).version != base.version


def test_split_is_stable_as_data_grows():
    texts = texts_by_domain()["editorial"][:1000]
    requests = [classify_request(i, t) for i, t in enumerate(texts)]
    feedback = [ResponseFeedback(f"req-{i}", label="neutral") for i in range(len(texts))]
    small = compile_dataset("classification", requests[:500], feedback[:500])
    large = compile_dataset("classification", requests, feedback)
    small_eval = {e.request_id for e in small.eval}
    large_eval = {e.request_id for e in large.eval}
    assert small_eval <= large_eval
    assert {e.request_id for e in small.train} <= {e.request_id for e in large.train}
    assert 0.07 < len(large.eval) / 1000 < 0.13  # eval_fraction 0.1


def test_replay_share_of_champion_data():
    champion = [{"text": t, "label": "positive", "request_id": f"old-{i}"}
                for i, t in enumerate(texts_by_domain()["tweet"][:1000])]
    new_request = classify_request(1, champion[0]["text"])  # collides with a replayed example
    feedback = [ResponseFeedback("req-1", label="negative")]
    config = CompileConfig(replay_fraction=0.3, eval_fraction=0.0)
    ds = compile_dataset("classification", [new_request], feedback,
                         champion_examples=champion, config=config)
    replay = [e for e in ds.train if e.source == "replay"]
    assert 0.25 < len(replay) / 1000 < 0.35
    assert all(e.request_id.startswith("old-") for e in replay)
    assert all("request_id" not in e.payload for e in ds.train)
    # The new label for the colliding text wins over the champion's.
    keys = [example_key("classification", e.payload) for e in ds.train]
    assert len(keys) == len(set(keys))
    assert {"request_id": "req-1", "source": "label", "split": "train"} in ds.lineage()
    none = compile_dataset("classification", [new_request], feedback, champion_examples=champion,
                           config=CompileConfig(replay_fraction=0.0))
    assert none.counts["replay"] == 0


def test_invalid_chat_prompts_are_dropped():
    bad = ServedResponse("chat-1", "chat", [{"role": "user", "content": "x"},
                                           {"role": "system", "content": "late"}], "y")
    ds = compile_dataset("chat", [bad], [ResponseFeedback("chat-1", rating=1)])
    assert ds.counts["invalid_input"] == 1


def test_plain_string_chat_input_becomes_a_user_message():
    req = ServedResponse("c", "chat", "hello", "hi there")
    ds = compile_dataset("chat", [req], [ResponseFeedback("c", correction="Hello!")],
                         config=CompileConfig(eval_fraction=0.0))
    assert ds.records("train") == [{"messages": [{"role": "user", "content": "hello"},
                                                 {"role": "assistant", "content": "Hello!"}]}]


def test_bad_arguments():
    with pytest.raises(ValueError, match="task"):
        compile_dataset("regression", [], [])
    with pytest.raises(ValueError, match="eval_fraction"):
        CompileConfig(eval_fraction=1.0)
    with pytest.raises(TypeError, match="ServedResponse"):
        compile_dataset("chat", [42], [])


def test_inputs_cut_by_the_request_log_are_left_out():
    cut_chat = ServedResponse("c", "chat", loggable([{"role": "user", "content": "x" * 500}], 256),
                              "reply")
    cut_text = ServedResponse("t", "classification", loggable("y" * 500, 256), "positive")
    chat = compile_dataset("chat", [cut_chat], [ResponseFeedback("c", correction="ok")])
    clf = compile_dataset("classification", [cut_text], [ResponseFeedback("t", label="positive")],
                          config=CompileConfig(labels=LABELS))
    assert chat.counts["invalid_input"] == 1 and clf.counts["invalid_input"] == 1
