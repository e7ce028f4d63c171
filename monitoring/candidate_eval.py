"""Evaluating adapter versions on eval splits for the promotion gate.

The gate compares the candidate and the champion on the same examples with the same code, so
both are measured here (the candidate's own job metrics cover the new split only): accuracy and
macro-F1 for classification, eval loss, perplexity and token accuracy (assistant tokens) for
chat. For chat, the first greedy replies on the new split are kept as ``replies``, and
:func:`gate_samples` moves both versions' into one side-by-side ``samples`` list.

Two evaluators implement :class:`Evaluator`: the serving engine's
(:class:`serving.gateway.engine_evaluator.EngineEvaluator`, what the monitor uses wherever it
reaches an engine: the numbers tenants will see, batched) and :class:`ScoringEvaluator`, which
runs the base model with each version's LoRA in this process through :mod:`training.scoring`
(the functions the recipe's evaluate step uses) where no engine is configured.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.platform import Platform
from services.store.models import AdapterTask

log = logging.getLogger("tuneloop.monitor")


@dataclass(frozen=True)
class VersionSpec:
    """What evaluating one adapter version needs."""

    tenant: str
    name: str
    version: int
    task: str
    labels: list[str] | None
    prompt_template: str | None
    artifact_key: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def engine_name(self) -> str:
        """The name engines know this version by (serving's, never a tenant-facing name)."""
        from services.registry import engine_adapter_name

        return engine_adapter_name(self.tenant, self.name, self.version)


class Evaluator(Protocol):
    def scorer(self, task: str) -> str:
        """What computes a task's numbers (``engine`` or ``peft``), recorded with the gate."""
        ...

    def evaluate(self, spec: VersionSpec, splits: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
        """``{split: {metric: value}}`` for every non-empty split (records in training format);
        a chat split may also hold ``replies`` (str list, see :func:`gate_samples`)."""
        ...

    def release(self, spec: VersionSpec) -> None:
        """The version will not be served (the gate refused it): free what scoring it holds."""
        ...

    def label_distributions(self, spec: VersionSpec, records: Sequence[dict[str, Any]]
                            ) -> list[dict[str, float]] | None:
        """Classification: each record's ``{label: probability}`` (None for chat), for the
        gate's forgetting measure; texts just scored by :meth:`evaluate` are not scored again."""
        ...


class Distributions:
    """The label distributions an evaluator computed last, by (engine name, texts): the gate asks
    for the previous split's right after evaluating it. Bounded to ``size`` entries."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, tuple[str, ...]], list[dict[str, float]]] = \
            OrderedDict()

    def put(self, ref: str, texts: Sequence[str], found: list[dict[str, float]]) -> None:
        self._entries[(ref, tuple(texts))] = found
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def get(self, ref: str, texts: Sequence[str]) -> list[dict[str, float]] | None:
        return self._entries.get((ref, tuple(texts)))

    def fetch(self, spec: VersionSpec, records: Sequence[dict[str, Any]], max_examples: int,
              evaluate: Callable[[VersionSpec, Mapping[str, Sequence[dict[str, Any]]]], Any]
              ) -> list[dict[str, float]] | None:
        """The distributions of the first ``max_examples`` records' texts: remembered, else
        scored by ``evaluate`` (which puts them here)."""
        texts = [r["text"] for r in records][:max_examples]
        if not texts:
            return None
        if self.get(spec.engine_name, texts) is None:
            evaluate(spec, {"texts": [{"text": t, "label": (spec.labels or [""])[0]}
                                      for t in texts]})
        return self.get(spec.engine_name, texts)


def predicted(distributions: Sequence[Mapping[str, float]]) -> list[str]:
    """The most probable label of each distribution."""
    return [max(d, key=d.__getitem__) for d in distributions]


def capped(splits: Mapping[str, Sequence[dict[str, Any]]], max_examples: int
           ) -> dict[str, list[dict[str, Any]]]:
    """The non-empty splits, each cut to its first ``max_examples`` (splits are in hash order)."""
    return {k: list(v)[:max_examples] for k, v in splits.items() if v}


def classification_result(spec: VersionSpec, records: Sequence[dict[str, Any]],
                          predicted: Sequence[str]) -> dict[str, float]:
    """The gate's classification metrics of ``predicted`` labels against the records'."""
    from training.evaluation import classification_metrics

    metrics = classification_metrics([r["label"] for r in records], predicted,
                                     list(spec.labels or []))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "examples": metrics["examples"]}


def gate_samples(records: Sequence[dict[str, Any]], candidate: Mapping[str, Any] | None,
                 champion: Mapping[str, Any] | None, split: str = "new"
                 ) -> list[dict[str, str | None]]:
    """The candidate's and the champion's first replies on ``split`` side by side:
    ``[{"prompt", "reference", "champion", "candidate"}]`` (at most
    :data:`training.evaluation.MAX_SAMPLES`, strings cut to 2,000 characters; champion None
    where it has no replies). ``candidate``/``champion`` are ``{split: metrics}`` as
    :meth:`Evaluator.evaluate` returns them; their ``replies`` are removed from every split, so
    the stored evaluation keeps them once. Empty without candidate replies (classification)."""
    from training.evaluation import last_turn, reply_samples

    found: dict[str, Any] = {}
    for name, metrics in (("candidate", candidate), ("champion", champion)):
        for split_name, values in (metrics or {}).items():
            replies = values.pop("replies", None) if isinstance(values, dict) else None
            if split_name == split:
                found[name] = replies
    if not found.get("candidate"):
        return []
    turns = [last_turn(r["messages"]) for r in records[:len(found["candidate"])]]
    return reply_samples([p for p, _ in turns], [ref for _, ref in turns],
                         champion=found.get("champion"), candidate=found["candidate"])


def tokenized_chat(tokenizer: Any, records: Sequence[dict[str, Any]], max_length: int) -> list:
    """The chat records as training tokenizes them (assistant tokens are the targets), cut to
    ``max_length``; records with no target token left are dropped."""
    from training.datasets import ChatExample
    from training.packing import truncate
    from training.tokenize import tokenize_example

    tokenized = [truncate(tokenize_example(tokenizer, ChatExample(r["messages"])), max_length)
                 for r in records]
    return [t for t in tokenized if t.num_target_tokens > 0]


def template_of(spec: VersionSpec) -> str:
    """The version's classification prompt, as serving uses it."""
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE

    return spec.prompt_template or DEFAULT_CLASSIFICATION_TEMPLATE


class ScoringEvaluator:
    """Loads the base model with the version's LoRA (CPU or GPU) and scores every split.

    ``max_examples`` caps each split (the first ones: splits are already in hash order). One
    evaluation runs at a time: a model copy per version is large. Chat: greedy replies (up to
    ``max_new_tokens``) to the first ``samples`` records of each split in ``sample_splits`` are
    kept as ``replies`` (see :func:`gate_samples`).
    """

    def __init__(self, platform: Platform, *, max_examples: int = 200, max_length: int = 512,
                 samples: int | None = None, sample_splits: tuple[str, ...] = ("new",),
                 max_new_tokens: int = 64) -> None:
        from training.evaluation import MAX_SAMPLES

        self.platform = platform
        self.max_examples = max_examples
        self.max_length = max_length
        self.samples = MAX_SAMPLES if samples is None else samples
        self.sample_splits = sample_splits
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()
        self._seen = Distributions()

    def evaluate(self, spec: VersionSpec, splits: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
        import torch

        from training import scoring

        wanted = capped(splits, self.max_examples)
        if not wanted:
            return {}
        with self._lock:
            adapter_dir = self.platform.artifacts.materialize_dir(spec.artifact_key)
            model, tokenizer = scoring.load_model(self.platform.base_model_dir, adapter_dir)
            try:
                with torch.no_grad():
                    return {name: self._measure(spec, model, tokenizer, records,
                                                name in self.sample_splits)
                            for name, records in wanted.items()}
            finally:
                del model

    def scorer(self, task: str) -> str:
        return "peft"

    def release(self, spec: VersionSpec) -> None:
        """Nothing is kept between evaluations."""

    def label_distributions(self, spec: VersionSpec, records: Sequence[dict[str, Any]]
                            ) -> list[dict[str, float]] | None:
        if spec.task != AdapterTask.CLASSIFICATION:
            return None
        return self._seen.fetch(spec, records, self.max_examples, self.evaluate)

    def _measure(self, spec: VersionSpec, model: Any, tokenizer: Any,
                 records: list[dict[str, Any]], sampled: bool = False) -> dict[str, Any]:
        from training import scoring
        from training.evaluation import SAMPLE_CHARS, last_turn

        if spec.task == AdapterTask.CLASSIFICATION:
            texts = [r["text"] for r in records]
            found = scoring.score_labels(model, tokenizer, template_of(spec), texts,
                                         list(spec.labels or []))
            self._seen.put(spec.engine_name, texts, found)
            return classification_result(spec, records, predicted(found))
        tokenized = tokenized_chat(tokenizer, records, self.max_length)
        metrics = scoring.eval_loss(model, tokenizer, tokenized)
        out: dict[str, Any] = {"eval_loss": metrics["eval_loss"],
                               "perplexity": metrics["perplexity"],
                               "token_accuracy": metrics["token_accuracy"],
                               "examples": len(tokenized)}
        if sampled and self.samples > 0:
            prompts = [last_turn(r["messages"])[0] for r in records[:self.samples]]
            replies = scoring.generate_replies(model, tokenizer, prompts, self.max_new_tokens)
            out["replies"] = [reply[:SAMPLE_CHARS] for reply in replies]
        return out
