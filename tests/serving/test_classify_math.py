"""Label scoring core: branch points, floors, normalisation (no engine)."""

from __future__ import annotations

import asyncio
import math

import pytest

from services.errors import InvalidInput
from services.label_scoring import MIN_FLOOR, branch_distribution, label_probabilities, plan_scoring
from services.labels import check_labels
from serving.classify import (
    Classifier,
    parse_chat_logprobs,
    parse_completion_logprobs,
)

END = 2


def test_distinct_first_tokens_need_only_the_root():
    plan = plan_scoring({"yes": [10, END], "no": [20, END], "maybe": [30, 31, END]})
    assert [bp.prefix for bp in plan.branch_points] == [()]
    assert dict(plan.root.children) == {10: ("yes",), 20: ("no",), 30: ("maybe",)}
    assert plan.deeper == ()


def test_shared_first_token_adds_one_branch_point_at_the_divergence():
    plan = plan_scoring({"sports news": [99, 6, 7, END], "sports gossip": [99, 6, 8, END],
                         "weather": [50, END]})
    assert [bp.prefix for bp in plan.branch_points] == [(), (99, 6)]
    assert plan.paths["sports news"] == (((), 99), ((99, 6), 7))
    assert plan.paths["weather"] == (((), 50),)


def test_label_that_is_a_prefix_of_another_is_told_apart_by_end_of_turn():
    plan = plan_scoring({"pos": [5, END], "positive": [5, 9, END]})
    assert dict(plan.deeper[0].children) == {END: ("pos",), 9: ("positive",)}


def test_probabilities_sum_to_one_and_follow_logprobs():
    plan = plan_scoring({"a": [1, END], "b": [2, END], "c": [3, END]})
    probs = label_probabilities(plan, {(): {1: math.log(0.6), 2: math.log(0.3), 3: math.log(0.05)}})
    assert sum(probs.values()) == pytest.approx(1.0)
    assert probs["a"] == pytest.approx(0.6 / 0.95)
    assert probs["a"] > probs["b"] > probs["c"]


def test_shared_prefix_mass_is_split_by_the_deeper_branch():
    plan = plan_scoring({"s n": [9, 7, END], "s g": [9, 8, END], "w": [4, END]})
    observations = {
        (): {9: math.log(0.8), 4: math.log(0.2)},
        (9,): {7: math.log(0.3), 8: math.log(0.1), 100: math.log(0.5)},
    }
    probs = label_probabilities(plan, observations)
    assert probs["w"] == pytest.approx(0.2)
    assert probs["s n"] == pytest.approx(0.8 * 0.75)
    assert probs["s g"] == pytest.approx(0.8 * 0.25)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_missing_token_gets_a_floor_not_zero():
    # top-K saw two tokens with 0.9 of the mass; two label tokens missing share the rest.
    dist = branch_distribution([1, 2, 3], {1: math.log(0.7), 5: math.log(0.2)})
    floor = min(0.2, 0.1 / 2)
    assert dist[2] == pytest.approx(floor / (0.7 + 2 * floor))
    assert dist[2] == dist[3] > 0
    assert sum(dist.values()) == pytest.approx(1.0)


def test_floor_never_below_minimum_even_when_top_k_holds_all_mass():
    dist = branch_distribution([1, 2], {1: 0.0})
    assert dist[2] == pytest.approx(MIN_FLOOR / (1 + MIN_FLOOR))


def test_all_labels_missing_gives_uniform():
    plan = plan_scoring({"a": [1, END], "b": [2, END]})
    probs = label_probabilities(plan, {(): {7: math.log(0.99)}})
    assert probs == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}


@pytest.mark.parametrize("labels", [["a"], ["a", "a"], ["a", " "], []])
def test_bad_label_sets_are_rejected(labels):
    with pytest.raises(InvalidInput):
        check_labels(labels)


def test_parse_engine_logprob_shapes():
    chat = {"choices": [{"logprobs": {"content": [{
        "token": "token_id:5", "logprob": -0.1,
        "top_logprobs": [{"token": "token_id:5", "logprob": -0.1},
                         {"token": "token_id:7", "logprob": -3.0}]}]}}]}
    assert parse_chat_logprobs(chat) == {5: -0.1, 7: -3.0}
    choice = {"logprobs": {"tokens": ["token_id:9"], "token_logprobs": [-0.5],
                           "top_logprobs": [{"token_id:3": -2.0}]}}
    assert parse_completion_logprobs(choice) == {3: -2.0, 9: -0.5}


class ScriptedEngine:
    """Answers /tokenize from a fixed vocabulary and scoring requests from fixed logprobs."""

    PROMPT = (1, 100, 101, 198)

    def __init__(self, vocab: dict[str, list[int]], logprobs: dict[tuple, dict[int, float]]):
        self.vocab, self.logprobs, self.calls = vocab, logprobs, []

    async def tokenize(self, body):
        self.calls.append("tokenize")
        messages = body["messages"]
        tokens = list(self.PROMPT)
        if messages[-1]["role"] == "assistant":
            tokens += self.vocab[messages[-1]["content"]]
            if not body.get("continue_final_message"):
                tokens += [END, 198]
        return {"tokens": tokens}

    async def chat_completions(self, body):
        self.calls.append("chat")
        top = [{"token": f"token_id:{t}", "logprob": lp} for t, lp in self.logprobs[()].items()]
        return {"prompt_token_ids": list(self.PROMPT),
                "choices": [{"logprobs": {"content": [{**top[0], "top_logprobs": top}]}}]}

    async def completions(self, body):
        self.calls.append("completions")
        choices = []
        for i, prompt in enumerate(body["prompt"]):
            lps = self.logprobs[tuple(prompt[len(self.PROMPT):])]
            first = next(iter(lps))
            choices.append({"index": i, "logprobs": {
                "tokens": [f"token_id:{first}"], "token_logprobs": [lps[first]],
                "top_logprobs": [{f"token_id:{t}": lp for t, lp in lps.items()}]}})
        return {"choices": choices}


def test_classifier_costs_one_request_per_text_for_distinct_first_tokens():
    engine = ScriptedEngine({"yes": [10], "no": [20]}, {(): {10: math.log(0.9), 20: math.log(0.1)}})
    classifier = Classifier(engine)  # type: ignore[arg-type]

    async def run():
        first = await classifier.classify("m", "{text}", "t", ["yes", "no"])
        engine.calls.clear()
        second = await classifier.classify("m", "{text}", "t", ["yes", "no"])
        return first, second

    first, second = asyncio.run(run())
    assert engine.calls == ["chat"]  # tokenizations are cached
    assert first == second
    assert second.label == "yes" and second.probabilities["yes"] == pytest.approx(0.9)
    assert second.engine_requests == 1


def test_classifier_scores_shared_first_tokens_with_one_more_request():
    engine = ScriptedEngine(
        {"sports news": [99, 6, 7], "sports gossip": [99, 6, 8], "weather": [50]},
        {(): {99: math.log(0.6), 50: math.log(0.4)}, (99, 6): {8: math.log(0.9), 7: math.log(0.1)}},
    )
    classifier = Classifier(engine)  # type: ignore[arg-type]
    labels = ["sports news", "sports gossip", "weather"]
    asyncio.run(classifier.plan("m", "{text}", labels))
    engine.calls.clear()
    result = asyncio.run(classifier.classify("m", "{text}", "t", labels))
    assert engine.calls == ["chat", "completions"]
    assert result.engine_requests == 2
    assert result.label == "sports gossip"
    assert result.probabilities["sports gossip"] == pytest.approx(0.6 * 0.9)
    assert sum(result.probabilities.values()) == pytest.approx(1.0)


class SlowEngine(ScriptedEngine):
    """A ScriptedEngine that records how many of its requests are in flight at once."""

    def __init__(self, *args):
        super().__init__(*args)
        self.in_flight = self.most_in_flight = 0

    async def _hold(self):
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1

    async def tokenize(self, body):
        await self._hold()
        return await super().tokenize(body)

    async def chat_completions(self, body):
        await self._hold()
        return await super().chat_completions(body)


def test_one_classify_call_keeps_at_most_max_fan_out_engine_requests_in_flight():
    labels = [f"l{i}" for i in range(60)]
    engine = SlowEngine({label: [10 + i] for i, label in enumerate(labels)},
                        {(): {10 + i: -1.0 for i in range(60)}})
    classifier = Classifier(engine, max_fan_out=8)  # type: ignore[arg-type]
    results = asyncio.run(classifier.classify_many("m", "{text}", ["t"] * 200, labels))
    assert len(results) == 200
    assert engine.most_in_flight <= 8
    assert engine.calls.count("tokenize") == 1 + 2 * 60  # the plan is built once, not per text
