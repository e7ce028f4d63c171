"""The monitor's gate evaluation of chat versions: token accuracy, replies and the side-by-side
samples, with the model-touching calls of :mod:`training.scoring` replaced (no model loads)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from monitoring import candidate_eval
from monitoring.candidate_eval import ScoringEvaluator, VersionSpec, gate_samples


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": question},
                         {"role": "assistant", "content": answer}]}


RECORDS = [chat(f"question {i}", f"answer {i}") for i in range(7)]


@pytest.fixture
def evaluator(monkeypatch: pytest.MonkeyPatch) -> ScoringEvaluator:
    """A ScoringEvaluator whose model replies ``<adapter> says <question>``."""
    from training import scoring

    def load_model(base: Any, adapter: Any) -> tuple[Any, Any]:
        return SimpleNamespace(name=str(adapter)), None

    def generate_replies(model: Any, tokenizer: Any, conversations: list, max_new_tokens: int
                         ) -> list[str]:
        return [f"{model.name} says {c[-1]['content']}" + "!" * 2500 for c in conversations]

    monkeypatch.setattr(scoring, "load_model", load_model)
    monkeypatch.setattr(scoring, "generate_replies", generate_replies)
    monkeypatch.setattr(scoring, "eval_loss", lambda model, tokenizer, tokenized: {
        "eval_loss": 1.5, "perplexity": 4.48, "eval_tokens": 40, "token_accuracy": 0.6})
    monkeypatch.setattr(candidate_eval, "tokenized_chat",
                        lambda tokenizer, records, max_length: list(records))
    platform = SimpleNamespace(base_model_dir="base", artifacts=SimpleNamespace(
        materialize_dir=lambda key: key))
    return ScoringEvaluator(platform)  # type: ignore[arg-type]


def spec(version: int) -> VersionSpec:
    return VersionSpec("acme", "support", version, "chat", None, None, f"v{version}")


def test_chat_evaluation_keeps_token_accuracy_and_the_new_splits_first_replies(evaluator):
    found = evaluator.evaluate(spec(2), {"new": RECORDS, "previous": RECORDS[:2], "empty": []})
    assert set(found) == {"new", "previous"}
    assert found["previous"] == {"eval_loss": 1.5, "perplexity": 4.48, "token_accuracy": 0.6,
                                 "examples": 2}
    replies = found["new"].pop("replies")
    assert found["new"] == {**found["previous"], "examples": 7}
    assert len(replies) == 5 and all(len(r) == 2000 for r in replies)
    assert replies[0].startswith("v2 says question 0!")


def test_gate_samples_put_both_versions_side_by_side(evaluator):
    candidate = evaluator.evaluate(spec(2), {"new": RECORDS, "previous": RECORDS})
    champion = evaluator.evaluate(spec(1), {"new": RECORDS, "previous": RECORDS})
    samples = gate_samples(RECORDS, candidate, champion)
    assert [list(s) for s in samples] == [["prompt", "reference", "champion", "candidate"]] * 5
    assert samples[1]["prompt"] == "question 1" and samples[1]["reference"] == "answer 1"
    assert samples[1]["champion"].startswith("v1 says question 1!")
    assert samples[1]["candidate"].startswith("v2 says question 1!")
    assert all(len(s["candidate"]) == 2000 for s in samples)
    # the replies moved into the samples: the stored evaluation keeps numbers per split
    assert all("replies" not in split for split in (*candidate.values(), *champion.values()))


def test_gate_samples_without_champion_replies_or_for_classification():
    candidate = {"new": {"eval_loss": 1.0, "replies": ["hi"]}}
    assert gate_samples(RECORDS, candidate, None) == [
        {"prompt": "question 0", "reference": "answer 0", "champion": None, "candidate": "hi"}]
    assert gate_samples(RECORDS, {"new": {"accuracy": 1.0}}, {"new": {"accuracy": 0.5}}) == []
    assert gate_samples(RECORDS, {}, None) == []


def test_no_replies_when_samples_are_off(evaluator):
    evaluator.samples = 0
    assert "replies" not in evaluator.evaluate(spec(2), {"new": RECORDS})["new"]
