"""Run a base model (optionally with a LoRA adapter) on examples: label scoring, greedy replies,
eval loss. This is the model-touching half of evaluation; metrics are in
:mod:`training.evaluation`.

Classification scores every label as the assistant reply to the shared prompt
(:func:`services.prompts.classification_messages`): the log-probability of the label's tokens
followed by the end-of-turn token, so "the label alone" is what gets scored; probabilities are
a softmax over the labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from services.prompts import classification_messages
from training.datasets import ChatExample, ClassificationExample, Message
from training.evaluation import (
    chat_metrics,
    classification_metrics,
    last_turn,
    loss_metrics,
    reply_samples,
)
from training.loss import token_loss_sum
from training.packing import batches, collate_padded, truncate
from training.tokenize import IGNORE_INDEX, TokenizedExample, prompt_ids, tokenize_conversation


def load_model(
    base_model: str | Path, adapter: str | Path | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for a local base dir and an optional PEFT adapter dir."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    # Any: the base model or a PeftModel wrapping it (transformers' return type covers neither).
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=dtype)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer


@torch.no_grad()
def score_labels(
    model: Any, tokenizer: Any, template: str, texts: Sequence[str], labels: Sequence[str],
) -> list[dict[str, float]]:
    """For each text, {label: probability} from the summed log-probs of each label reply.

    The prompt runs once; its KV cache is repeated for the labels, which run as one small
    right-padded batch (pads come after every scored position, so they change nothing).
    """
    device = next(model.parameters()).device
    end = [tokenizer.eos_token_id]
    label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"] + end for label in labels]
    width = max(len(ids) for ids in label_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end[0]
    continuation = torch.tensor([ids + [pad] * (width - len(ids)) for ids in label_ids],
                                device=device)
    results = []
    for text in texts:
        prompt = prompt_ids(tokenizer, classification_messages(template, text, list(labels)))
        out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
        first = torch.log_softmax(out.logits[0, -1].float(), -1)
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(labels))
        mask = torch.ones(len(labels), len(prompt) + width, dtype=torch.long, device=device)
        rest = model(input_ids=continuation, past_key_values=cache, attention_mask=mask,
                     use_cache=False).logits.float()
        rest = torch.log_softmax(rest, -1)
        scores = []
        for k, ids in enumerate(label_ids):
            score = float(first[ids[0]])
            score += sum(float(rest[k, j - 1, ids[j]]) for j in range(1, len(ids)))
            scores.append(score)
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        total = sum(weights)
        results.append({label: w / total for label, w in zip(labels, weights)})
    return results


def classify(
    model: Any, tokenizer: Any, template: str, texts: Sequence[str], labels: Sequence[str]
) -> list[str]:
    """The most probable label for each text (see :func:`score_labels`)."""
    return [max(p, key=p.__getitem__) for p in score_labels(model, tokenizer, template, texts, labels)]


@torch.no_grad()
def greedy_generate(model: Any, tokenizer: Any, messages: list[Message], max_new_tokens: int,
                    **options: Any) -> tuple[int, Any]:
    """One greedy generation for a conversation: the prompt length and ``generate``'s output
    (``options`` go to ``generate``, e.g. ``output_logits=True, return_dict_in_generate=True``)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids(tokenizer, messages)], device=device)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
        do_sample=False, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **options,
    )
    return ids.shape[1], out


def generate_replies(
    model: Any, tokenizer: Any, conversations: Sequence[list[Message]], max_new_tokens: int = 64
) -> list[str]:
    """Greedy assistant reply to each conversation (one at a time, no padding effects)."""
    replies = []
    for messages in conversations:
        start, out = greedy_generate(model, tokenizer, messages, max_new_tokens)
        replies.append(tokenizer.decode(out[0, start:], skip_special_tokens=True).strip())
    return replies


@torch.no_grad()
def eval_loss(
    model: Any, tokenizer: Any, examples: Sequence[TokenizedExample], batch_size: int = 8
) -> dict[str, float]:
    """Mean assistant-token loss, perplexity and token accuracy (the share of assistant tokens
    that are the argmax of the model's next-token logits) over tokenized examples."""
    device = next(model.parameters()).device
    total, count, correct = 0.0, 0, 0
    for chunk in batches(examples, batch_size):
        batch = {k: v.to(device) for k, v in collate_padded(chunk, tokenizer.pad_token_id).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        s, n = token_loss_sum(logits, batch["labels"])
        total, count = total + float(s), count + n
        correct += argmax_hits(logits, batch["labels"])
    return loss_metrics(total, count, correct)


def argmax_hits(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many target tokens (label != -100) are the argmax of the logits before them."""
    targets = labels[:, 1:]
    hits = (logits[:, :-1].argmax(-1) == targets) & (targets != IGNORE_INDEX)
    return int(hits.sum())


def evaluate_classifier(
    model: Any, tokenizer: Any, template: str, examples: Sequence[ClassificationExample],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, macro/per-class F1 and confusion of ``model`` on labelled examples.

    Use it for the base (``with model.disable_adapter()``), a candidate and the champion on
    the same held-out split.
    """
    predicted = classify(model, tokenizer, template, [e.text for e in examples], labels)
    return classification_metrics([e.label for e in examples], predicted, list(labels))


def evaluate_chat(
    model: Any, tokenizer: Any, examples: Sequence[ChatExample], *, max_length: int = 1024,
    generate: int = 20, max_new_tokens: int = 64, samples: int = 0,
) -> dict[str, Any]:
    """Eval loss/perplexity/token accuracy on every example; exact match, ROUGE-L and BLEU of
    greedy replies to the first ``generate`` examples (reference: each example's last
    assistant message). ``samples`` > 0 adds the first ones as ``samples``
    (``[{"prompt", "reference", "candidate"}]``, see :func:`training.evaluation.reply_samples`)."""
    tokenized = [truncate(tokenize_conversation(tokenizer, e.messages), max_length)
                 for e in examples]
    metrics: dict[str, Any] = dict(eval_loss(model, tokenizer, tokenized))
    turns = [last_turn(example.messages) for example in list(examples)[:generate]]
    prompts, references = [p for p, _ in turns], [r for _, r in turns]
    replies = generate_replies(model, tokenizer, prompts, max_new_tokens)
    metrics.update(chat_metrics(references, replies))
    if samples > 0:
        metrics["samples"] = reply_samples(prompts, references, limit=samples, candidate=replies)
    return metrics
