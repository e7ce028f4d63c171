"""Classification on the chat engine: a probability for every label of an adapter's label set.

A classification adapter is a LoRA trained to answer the prompt from
:func:`services.prompts.classification_messages` with its label alone. Serving scores the
labels from the engine's next-token log probabilities instead of generating text.

How a label's probability is computed (cost does not grow with the number of labels):

1. Each label is tokenized *in context* (the assistant reply after the chat template's
   generation prompt) followed by the template's end-of-turn token, through the engine's
   ``/tokenize`` (no tokenizer in the gateway). These are cached per (model, template, labels).
2. The label token sequences form a trie. A *branch point* is a token prefix where labels
   diverge; the root (the empty reply) is always one. A label's probability is the product, over
   the branch points on its path, of the probability of its next token normalised over the
   branch's tokens. Where a label's prefix is unique it needs no more evidence, so:
3. Labels with distinct first tokens (the usual case) need ONE engine request: a chat
   completion with ``max_tokens=1`` asking for the logprobs of exactly those first tokens
   (vLLM ``logprob_token_ids``; other servers fall back to ``top_logprobs=K``). One prefill,
   whatever the number of labels.
4. Labels sharing a first token (``"sports news"`` / ``"sports gossip"``) add ONE more request:
   a ``/v1/completions`` batch with one prompt per deeper branch point (prompt tokens + the
   shared label prefix), ``max_tokens=1``. Prefix caching serves the shared prompt from the
   first request, so each prompt only prefills its few label tokens.
5. A branch token the engine did not return (a server ignoring ``logprob_token_ids`` and the
   token outside the top-K) gets a floor: the smaller of the lowest returned probability and
   the unreturned mass shared among the missing tokens (at least ``1e-12``).
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from services.errors import InvalidInput
from services.label_scoring import Prefix, ScoringPlan, label_probabilities, plan_scoring
from services.labels import check_labels
from services.prompts import classification_messages
from serving.engine_client import EngineClient

MAX_LOGPROB_TOKEN_IDS = 128  # vLLM's limit on logprob_token_ids; beyond it top-K + floor is used
MAX_FAN_OUT = 16
"""Engine requests one classify call keeps in flight at most (texts scored, labels tokenized):
256 texts or 64 labels must not open hundreds of concurrent engine requests."""
T = TypeVar("T")
_PROBE_TEXT = "x"  # label tokens in context do not depend on the text; any text will do

# -- pure core ------------------------------------------------------------------------------------


def parse_chat_logprobs(response: Mapping) -> dict[int, float]:
    """Token id -> logprob for the first generated token of a chat completion.

    Expects ``return_tokens_as_token_ids`` (tokens spelled ``"token_id:123"``).
    """
    content = response["choices"][0]["logprobs"]["content"][0]
    entries = [content, *content.get("top_logprobs", [])]
    return {_token_id(e["token"]): float(e["logprob"]) for e in entries}


def parse_completion_logprobs(choice: Mapping) -> dict[int, float]:
    """Token id -> logprob for the first generated token of one completions choice."""
    logprobs = choice["logprobs"]
    observed = {_token_id(tok): float(lp) for tok, lp in logprobs["top_logprobs"][0].items()}
    observed.setdefault(_token_id(logprobs["tokens"][0]), float(logprobs["token_logprobs"][0]))
    return observed


def _token_id(token: str) -> int:
    if not token.startswith("token_id:"):
        raise ValueError(f"expected a token spelled 'token_id:N', got {token!r}")
    return int(token.removeprefix("token_id:"))


# -- engine edge -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classification:
    """Result for one text: the most probable label and every label's probability (sum 1)."""

    label: str
    probabilities: dict[str, float]
    engine_requests: int = field(default=1, compare=False)
    """Generation requests this text cost (1 when first tokens are distinct, else 2)."""


class Classifier:
    """Scores label sets on one engine; ``model`` is the engine-side adapter name (or base).

    ``top_logprobs`` is K for servers that ignore ``logprob_token_ids`` (vLLM caps it with
    ``--max-logprobs``, default 20). Label tokenizations are cached (``cache_size`` label sets).
    """

    def __init__(self, client: EngineClient, *, top_logprobs: int = 20, cache_size: int = 256,
                 max_fan_out: int = MAX_FAN_OUT) -> None:
        self.client = client
        self.top_logprobs = top_logprobs
        self.cache_size = cache_size
        self.max_fan_out = max_fan_out
        self._plans: OrderedDict[tuple, ScoringPlan] = OrderedDict()

    async def classify(self, model: str, template: str, text: str, labels: Sequence[str]) -> Classification:
        """Classify one ``text`` with the prompt ``template`` over ``labels``."""
        labels = check_labels(labels)
        plan = await self.plan(model, template, labels)
        messages = classification_messages(template, text, labels)
        root_tokens = list(plan.root.children)
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "return_tokens_as_token_ids": True,
            "return_token_ids": bool(plan.deeper),
        }
        if len(root_tokens) <= MAX_LOGPROB_TOKEN_IDS:
            body["logprob_token_ids"] = root_tokens
        response = await self.client.chat_completions(body)
        observations: dict[Prefix, dict[int, float]] = {(): parse_chat_logprobs(response)}
        requests = 1
        if plan.deeper:
            prompt = response.get("prompt_token_ids")
            if not prompt:  # not vLLM: tokenize the same messages instead
                prompt = (await self.client.tokenize(
                    {"model": model, "messages": messages, "add_generation_prompt": True}
                ))["tokens"]
            observations.update(await self._score_deeper(model, list(prompt), plan))
            requests = 2
        probabilities = label_probabilities(plan, observations)
        best = max(labels, key=lambda label: probabilities[label])
        return Classification(best, {label: probabilities[label] for label in labels}, requests)

    async def classify_many(
        self, model: str, template: str, texts: Sequence[str], labels: Sequence[str]
    ) -> list[Classification]:
        """Classify several texts concurrently (the engine batches them), at most
        ``max_fan_out`` at a time; the label plan is built once, before the texts fan out."""
        await self.plan(model, template, check_labels(labels))
        return await _bounded(self.max_fan_out, [
            functools.partial(self.classify, model, template, text, labels) for text in texts])

    async def _score_deeper(
        self, model: str, prompt: list[int], plan: ScoringPlan
    ) -> dict[Prefix, dict[int, float]]:
        wanted = sorted({tok for bp in plan.deeper for tok in bp.children})
        body = {
            "model": model,
            "prompt": [prompt + list(bp.prefix) for bp in plan.deeper],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.top_logprobs,
            "return_tokens_as_token_ids": True,
        }
        if len(wanted) <= MAX_LOGPROB_TOKEN_IDS:
            body["logprob_token_ids"] = wanted
        response = await self.client.completions(body)
        choices = sorted(response["choices"], key=lambda c: c["index"])
        return {bp.prefix: parse_completion_logprobs(c) for bp, c in zip(plan.deeper, choices)}

    async def plan(self, model: str, template: str, labels: Sequence[str]) -> ScoringPlan:
        """The (cached) scoring plan for ``labels`` under ``model``'s tokenizer and template."""
        key = (model, template, tuple(labels))
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_scoring(await self.label_tokens(model, template, labels))
            self._plans[key] = plan
            while len(self._plans) > self.cache_size:
                self._plans.popitem(last=False)
        self._plans.move_to_end(key)
        return plan

    async def label_tokens(self, model: str, template: str, labels: Sequence[str]) -> dict[str, list[int]]:
        """Each label's reply tokens in context, plus the end-of-turn token, via ``/tokenize``."""
        messages = classification_messages(template, _PROBE_TEXT, list(labels))

        async def tokens(extra: list[dict[str, str]], **flags: bool) -> list[int]:
            body = {"model": model, "messages": messages + extra, **flags}
            return (await self.client.tokenize(body))["tokens"]

        prompt = await tokens([], add_generation_prompt=True)

        async def one(label: str) -> list[int]:
            reply = [{"role": "assistant", "content": label}]
            open_ = await tokens(reply, add_generation_prompt=False, continue_final_message=True)
            closed = await tokens(reply, add_generation_prompt=False)
            if open_[: len(prompt)] != prompt or closed[: len(open_)] != open_ or len(closed) == len(open_):
                raise InvalidInput(
                    f"cannot locate label {label!r} in the chat template of {model!r}; the "
                    "template must render an assistant reply as generation prompt + text + end"
                )
            return open_[len(prompt):] + [closed[len(open_)]]

        seqs = await _bounded(self.max_fan_out, [functools.partial(one, label) for label in labels])
        return dict(zip(labels, seqs))


async def _bounded(limit: int, calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    """The results of ``calls`` (in order), at most ``limit`` running at once."""
    gate = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return list(await asyncio.gather(*(run(call) for call in calls)))
