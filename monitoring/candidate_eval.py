"""Evaluating adapter versions on eval splits for the promotion gate.

The gate compares the candidate and the champion on the same examples with the same code, so
both are measured here (the candidate's own job metrics cover the new split only). The real
evaluator runs the base model with each version's LoRA in this process through
:mod:`training.scoring` and :mod:`training.evaluation`, the same functions the recipe's evaluate
step uses: accuracy and macro-F1 for classification, eval loss for chat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from services.platform import Platform
from services.store.models import AdapterTask

log = logging.getLogger("tuneloop.monitor")


@dataclass(frozen=True)
class VersionSpec:
    """What evaluating one adapter version needs."""

    name: str
    version: int
    task: str
    labels: list[str] | None
    prompt_template: str | None
    artifact_key: str

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"


class Evaluator(Protocol):
    def evaluate(self, spec: VersionSpec, splits: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
        """``{split: {metric: value}}`` for every non-empty split (records in training format)."""
        ...


class ScoringEvaluator:
    """Loads the base model with the version's LoRA (CPU or GPU) and scores every split.

    ``max_examples`` caps each split (the first ones: splits are already in hash order). One
    evaluation runs at a time: a model copy per version is large.
    """

    def __init__(self, platform: Platform, *, max_examples: int = 200, max_length: int = 512) -> None:
        self.platform = platform
        self.max_examples = max_examples
        self.max_length = max_length
        self._lock = threading.Lock()

    def evaluate(self, spec: VersionSpec, splits: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
        import torch

        from training import scoring

        wanted = {k: list(v)[: self.max_examples] for k, v in splits.items() if v}
        if not wanted:
            return {}
        with self._lock:
            adapter_dir = self.platform.artifacts.materialize_dir(spec.artifact_key)
            model, tokenizer = scoring.load_model(self.platform.base_model_dir, adapter_dir)
            try:
                with torch.no_grad():
                    return {name: self._measure(spec, model, tokenizer, records)
                            for name, records in wanted.items()}
            finally:
                del model

    def _measure(self, spec: VersionSpec, model: Any, tokenizer: Any,
                 records: list[dict[str, Any]]) -> dict[str, float]:
        from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
        from training import scoring
        from training.datasets import ChatExample
        from training.evaluation import classification_metrics
        from training.packing import truncate
        from training.tokenize import tokenize_example

        if spec.task == AdapterTask.CLASSIFICATION:
            labels = list(spec.labels or [])
            template = spec.prompt_template or DEFAULT_CLASSIFICATION_TEMPLATE  # as serving does
            predicted = scoring.classify(model, tokenizer, template,
                                         [r["text"] for r in records], labels)
            metrics = classification_metrics([r["label"] for r in records], predicted, labels)
            return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                    "examples": metrics["examples"]}
        tokenized = [truncate(tokenize_example(tokenizer, ChatExample(r["messages"])),
                              self.max_length) for r in records]
        tokenized = [t for t in tokenized if t.num_target_tokens > 0]
        metrics = scoring.eval_loss(model, tokenizer, tokenized)
        return {"eval_loss": metrics["eval_loss"], "perplexity": metrics["perplexity"],
                "examples": len(tokenized)}
