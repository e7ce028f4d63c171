"""Examples -> token ids and labels, with loss on assistant tokens only.

The conversation is rendered with the base tokenizer's own chat template (the one the vLLM
engine serves with), so training and serving see the same tokens. Assistant spans are found by
rendering growing prefixes of the conversation: the tokens a message adds after the
``add_generation_prompt`` header are its content and the end-of-turn token. Those tokens get
their ids as labels; everything else (system, user, headers, the newline after end-of-turn) gets
-100. Classification examples become a conversation with
:func:`services.prompts.classification_messages` and the label as the assistant reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.prompts import classification_messages
from training.datasets import ChatExample, ClassificationExample, Message, TokenCounter

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]

    @property
    def num_target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render(tokenizer: Any, messages: list[Message], generation_prompt: bool = False) -> list[int]:
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = tokenizer.apply_chat_template(
        plain, tokenize=False, add_generation_prompt=generation_prompt
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _end_of_turn_id(tokenizer: Any) -> int:
    return tokenizer.eos_token_id


def tokenize_conversation(tokenizer: Any, messages: list[Message]) -> TokenizedExample:
    """Token ids of the whole conversation; labels only on trained assistant turns.

    An assistant message with ``"weight": 0`` is context only (OpenAI's convention). Raises
    ValueError if the template does not render prefixes as token prefixes (not a chat template
    this function can split).
    """
    input_ids = _render(tokenizer, messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    end_id = _end_of_turn_id(tokenizer)
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        start = len(_render(tokenizer, messages[:i], generation_prompt=True)) if i else 0
        upto = _render(tokenizer, messages[: i + 1])
        stop = len(upto)
        if input_ids[:stop] != upto:
            raise ValueError("the chat template does not render conversation prefixes as token "
                             "prefixes; cannot locate assistant turns")
        # Train on the content and the end-of-turn token, not on what the template adds after.
        span_end = stop
        for j in range(start, stop):
            if input_ids[j] == end_id:
                span_end = j + 1
                break
        labels[start:span_end] = input_ids[start:span_end]
    return TokenizedExample(input_ids=input_ids, labels=labels)


def classification_conversation(
    template: str, text: str, labels: Sequence[str], label: str
) -> list[Message]:
    """The conversation a classification adapter is trained on: prompt, then the label alone."""
    return classification_messages(template, text, list(labels)) + [
        {"role": "assistant", "content": label}
    ]


def tokenize_example(
    tokenizer: Any,
    example: ChatExample | ClassificationExample,
    *,
    template: str | None = None,
    labels: Sequence[str] = (),
) -> TokenizedExample:
    """Tokenize a chat or classification example (classification needs template and labels)."""
    if isinstance(example, ChatExample):
        return tokenize_conversation(tokenizer, example.messages)
    if template is None or not labels:
        raise ValueError("classification examples need the prompt template and the label set")
    return tokenize_conversation(
        tokenizer, classification_conversation(template, example.text, labels, example.label)
    )


def prompt_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    """Token ids of ``messages`` followed by the assistant header, as the engine prompts."""
    return _render(tokenizer, messages, generation_prompt=True)


def conversation_token_counter(tokenizer: Any) -> TokenCounter:
    """A counter for :mod:`training.datasets` validation: tokens of the rendered conversation."""

    def count(messages: list[Message]) -> int:
        return len(_render(tokenizer, messages))

    return count
