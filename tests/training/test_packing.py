"""Packing: row layout, the block-diagonal mask, and loss equality with unpacked batches."""

from __future__ import annotations

import pytest
import torch

from training.packing import (
    block_causal_mask,
    build_row,
    collate_packed,
    collate_padded,
    pack_examples,
    plan_rows,
    truncate,
)
from training.tokenize import IGNORE_INDEX, TokenizedExample


def ex(ids, labels=None):
    return TokenizedExample(list(ids), list(labels if labels is not None else ids))


def test_plan_rows_first_fit_decreasing():
    assert plan_rows([6, 5, 4, 3, 2], 10) == [[0, 2], [1, 3, 4]]
    assert plan_rows([3, 3, 3], 5) == [[0], [1], [2]]
    assert plan_rows([], 10) == []
    with pytest.raises(ValueError, match="over max_length"):
        plan_rows([11], 10)


def test_build_row_restarts_positions_and_masks_first_label():
    row = build_row([ex([1, 2, 3]), ex([4, 5], [IGNORE_INDEX, 5])])
    assert row.input_ids == [1, 2, 3, 4, 5]
    assert row.position_ids == [0, 1, 2, 0, 1]
    assert row.segment_ids == [1, 1, 1, 2, 2]
    assert row.labels == [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5]


def test_block_causal_mask_blocks_other_examples_and_the_future():
    segments = torch.tensor([[1, 1, 2, 2, 0]])
    allowed = block_causal_mask(segments, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 0, 1],  # padding sees only itself: no fully masked row, no NaN
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_collate_shapes_and_padding():
    rows = pack_examples([ex([1] * 3), ex([2] * 4), ex([3] * 6)], max_length=8)
    batch = collate_packed(rows, pad_id=0)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["position_ids"].shape
    assert [len(r) for r in rows] == [6, 7]
    assert batch["attention_mask"].shape == (2, 1, 7, 7)  # padded to the longest row
    padded = collate_padded([ex([1, 2]), ex([3])], pad_id=0)
    assert padded["input_ids"].tolist() == [[1, 2], [3, 0]]
    assert padded["labels"].tolist() == [[1, 2], [3, IGNORE_INDEX]]
    assert padded["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert truncate(ex([1, 2, 3]), 2) == ex([1, 2])


@pytest.mark.integration
def test_packed_batch_gives_the_same_loss_as_unpacked(base_model_dir):
    """Sum of token losses / tokens is equal, packed or not, with the real model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.loss import batch_loss_sum
    from training.tokenize import tokenize_conversation

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32).eval()
    conversations = [
        [{"role": "user", "content": f"What is {i} plus {i}?"},
         {"role": "assistant", "content": f"It is {2 * i}." + " Easy." * (i % 3)}]
        for i in range(5)
    ] + [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
          {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
          {"role": "assistant", "content": "Goodbye!"}]]
    examples = [tokenize_conversation(tokenizer, c) for c in conversations]
    rows = pack_examples(examples, max_length=160)
    assert len(rows) < len(examples)  # really packed: several examples per row
    with torch.no_grad():
        unpacked_sum, unpacked_n = batch_loss_sum(model, collate_padded(examples,
                                                                        tokenizer.pad_token_id))
        packed_sum, packed_n = batch_loss_sum(model, collate_packed(rows, tokenizer.pad_token_id))
        # Without the block mask the packed loss would differ: the check has teeth.
        leaky = collate_packed(rows, tokenizer.pad_token_id)
        leaky.pop("attention_mask")
        leaky.pop("position_ids")
        leaky_sum, _ = batch_loss_sum(model, leaky)
    assert packed_n == unpacked_n > 0
    assert float(packed_sum) / packed_n == pytest.approx(float(unpacked_sum) / unpacked_n,
                                                         rel=1e-4)
    assert abs(float(leaky_sum) - float(unpacked_sum)) / unpacked_n > 1e-3
