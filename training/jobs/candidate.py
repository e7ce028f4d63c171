"""A finished run's candidate adapter on the job manager's side: the held-out split the recipe
evaluated on, and one PEFT model holding the candidate (and the champion) adapter.

The split is rebuilt from the run's saved ``TrainConfig`` with the recipe's own functions, so
the champion is scored on exactly the examples the candidate and the base were. The model is
loaded on first use only (a job with no champion and no engine never loads it) and freed by
:meth:`Candidate.close`.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.prompts import classification_messages
from training.config import TrainConfig
from training.datasets import ChatExample, ClassificationExample, Message

CANDIDATE, CHAMPION = "candidate", "champion"


def held_out_examples(config: TrainConfig) -> tuple[list, str]:
    """(held-out examples, where they came from) exactly as the recipe split them; the
    training examples (source ``training``) when the run held nothing out."""
    from training.recipe import load_datasets, split_examples

    train, evaluation, source = load_datasets(config)
    train_examples, eval_examples = split_examples(config, train, evaluation)
    if eval_examples:
        return eval_examples[: config.eval_max_examples], source
    return train_examples[: config.eval_max_examples], "training"


def prompt_of(example: Any, template: str, labels: list[str]) -> list[Message]:
    """The conversation a served request would send for ``example`` (no reference reply)."""
    if isinstance(example, ClassificationExample):
        return classification_messages(template, example.text, labels)
    assert isinstance(example, ChatExample)
    last = max(i for i, m in enumerate(example.messages) if m["role"] == "assistant")
    return [dict(m) for m in example.messages[:last]]


@dataclass
class Candidate:
    """The candidate adapter of one finished run (``adapter_dir``) and its run's config."""

    config: TrainConfig
    adapter_dir: Path
    _model: Any = field(default=None, repr=False)
    _tokenizer: Any = field(default=None, repr=False)
    _examples: tuple[list, str] | None = field(default=None, repr=False)
    _champion_dir: str | None = field(default=None, repr=False)

    @property
    def examples(self) -> list:
        if self._examples is None:
            self._examples = held_out_examples(self.config)
        return self._examples[0]

    @property
    def examples_source(self) -> str:
        self.examples  # noqa: B018 - loads them
        assert self._examples is not None
        return self._examples[1]

    def model(self, adapter: str = CANDIDATE) -> tuple[Any, Any]:
        """(PEFT model with ``adapter`` active, tokenizer); loads base + candidate on first use."""
        import torch
        from peft import PeftModel

        from training import scoring

        if self._model is None:
            base, self._tokenizer = scoring.load_model(self.config.base_model, None,
                                                       dtype=torch.float32)
            self._model = PeftModel.from_pretrained(base, str(self.adapter_dir),
                                                    adapter_name=CANDIDATE)
            self._model.eval()
        if adapter == CHAMPION and self._champion_dir is None:
            raise RuntimeError("load_champion() first")
        self._model.set_adapter(adapter)
        return self._model, self._tokenizer

    def load_champion(self, adapter_dir: str | Path) -> None:
        """Add the champion's LoRA next to the candidate's (one base model in memory)."""
        model, _ = self.model()
        model.load_adapter(str(adapter_dir), adapter_name=CHAMPION)
        model.eval()
        self._champion_dir = str(adapter_dir)

    def close(self) -> None:
        """Free the model (the job manager lives in a long-running server)."""
        self._model = self._tokenizer = None
        gc.collect()
