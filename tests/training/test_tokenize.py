"""Tokenization with the base model's own chat template: loss only on assistant replies."""

from __future__ import annotations

import pytest

from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
from training.datasets import ClassificationExample
from training.tokenize import (
    IGNORE_INDEX,
    conversation_token_counter,
    prompt_ids,
    tokenize_conversation,
    tokenize_example,
)


@pytest.fixture(scope="module")
def tokenizer(base_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


def trained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids, example.labels)
                             if label != IGNORE_INDEX])


def test_only_assistant_content_and_end_of_turn_are_targets(tokenizer):
    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello there"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "ok!"}]
    example = tokenize_conversation(tokenizer, messages)
    assert trained_text(tokenizer, example) == "hello there<|im_end|>ok!<|im_end|>"
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered  # the template itself, untouched
    assert len(example.input_ids) == conversation_token_counter(tokenizer)(messages)


def test_weight_zero_assistant_turn_is_context_only(tokenizer):
    messages = [{"role": "user", "content": "a"},
                {"role": "assistant", "content": "skip me", "weight": 0},
                {"role": "user", "content": "b"},
                {"role": "assistant", "content": "learn me"}]
    assert trained_text(tokenizer, tokenize_conversation(tokenizer, messages)) == \
        "learn me<|im_end|>"


def test_classification_example_trains_on_the_label_alone(tokenizer):
    labels = ["negative", "positive"]
    example = tokenize_example(tokenizer, ClassificationExample("great film", "positive"),
                               template=DEFAULT_CLASSIFICATION_TEMPLATE, labels=labels)
    assert trained_text(tokenizer, example) == "positive<|im_end|>"
    # The prompt part is exactly what the engine sends for /v1/classify.
    from services.prompts import classification_messages

    prompt = prompt_ids(tokenizer, classification_messages(
        DEFAULT_CLASSIFICATION_TEMPLATE, "great film", labels))
    assert example.input_ids[: len(prompt)] == prompt
    with pytest.raises(ValueError, match="template and the label set"):
        tokenize_example(tokenizer, ClassificationExample("x", "y"))
