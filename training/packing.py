"""Pack short tokenized examples into rows of ``max_length`` tokens, and collate batches.

How attention stays inside each example: every packed row carries ``position_ids`` that restart
at 0 for each example (so rotary embeddings see the same positions as unpacked) and a 4D
block-diagonal causal mask, (batch, 1, length, length), additive (0 = attend, dtype min = blocked).
transformers passes a 4D ``attention_mask`` through unchanged to the attention kernel (sdpa and
eager; ``masking_utils._preprocess_mask_arguments``), so no token attends across an example
boundary. The first token of every example gets label -100: in an unpacked batch it is never a
target (labels shift by one), and in a packed row it would otherwise be predicted from the
previous example. With these three pieces a packed batch gives the same summed token loss as
the same examples unpacked (tested in tests/training/test_packing.py).

Pure functions over lists; only :func:`collate_packed` / :func:`collate_padded` build tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from training.tokenize import IGNORE_INDEX, TokenizedExample


@dataclass(frozen=True)
class PackedRow:
    """Examples laid end to end; ``segment_ids`` number them 1, 2, ... (0 never occurs)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segment_ids: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def truncate(example: TokenizedExample, max_length: int) -> TokenizedExample:
    """Cut an example to ``max_length`` tokens (labels cut with it)."""
    if len(example.input_ids) <= max_length:
        return example
    return TokenizedExample(example.input_ids[:max_length], example.labels[:max_length])


def plan_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Group example indices into rows of at most ``max_length`` tokens (first-fit decreasing).

    Deterministic: ties keep input order. Raises ValueError for an example over ``max_length``.
    """
    for i, n in enumerate(lengths):
        if n > max_length:
            raise ValueError(f"example {i} has {n} tokens, over max_length {max_length}; "
                             "truncate it first")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        for r, space in enumerate(free):
            if lengths[i] <= space:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(max_length - lengths[i])
    return [sorted(row) for row in rows]


def build_row(examples: Sequence[TokenizedExample]) -> PackedRow:
    """Concatenate examples into one row with restarting positions and per-example segments."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    segment_ids: list[int] = []
    for segment, example in enumerate(examples, start=1):
        n = len(example.input_ids)
        input_ids += example.input_ids
        labels += [IGNORE_INDEX] + example.labels[1:]
        position_ids += list(range(n))
        segment_ids += [segment] * n
    return PackedRow(input_ids, labels, position_ids, segment_ids)


def pack_examples(examples: Sequence[TokenizedExample], max_length: int) -> list[PackedRow]:
    """Pack examples into as few rows of at most ``max_length`` tokens as first-fit allows."""
    plan = plan_rows([len(e.input_ids) for e in examples], max_length)
    return [build_row([examples[i] for i in row]) for row in plan]


def block_causal_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, L, L) additive mask: query i sees key j iff j <= i and same segment."""
    length = segment_ids.shape[1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None, :, :]


def collate_packed(
    rows: Sequence[PackedRow], pad_id: int, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """Tensors for a batch of packed rows: input_ids, labels, position_ids, 4D attention_mask.

    Padding forms its own segment (it attends only to padding, so no row is fully masked and
    no NaN appears) and is never a target.
    """
    length = max(len(r) for r in rows)
    ids, labels, positions, segments = [], [], [], []
    for row in rows:
        pad = length - len(row)
        ids.append(row.input_ids + [pad_id] * pad)
        labels.append(row.labels + [IGNORE_INDEX] * pad)
        positions.append(row.position_ids + list(range(pad)))
        segments.append(row.segment_ids + [0] * pad)
    segment_tensor = torch.tensor(segments)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "position_ids": torch.tensor(positions),
        "attention_mask": block_causal_mask(segment_tensor, dtype),
    }


def collate_padded(examples: Sequence[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors for unpacked examples, right-padded: input_ids, labels, 2D attention_mask."""
    length = max(len(e.input_ids) for e in examples)
    ids, labels, mask = [], [], []
    for e in examples:
        pad = length - len(e.input_ids)
        ids.append(e.input_ids + [pad_id] * pad)
        labels.append(e.labels + [IGNORE_INDEX] * pad)
        mask.append([1] * len(e.input_ids) + [0] * pad)
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def batches(items: Sequence, batch_size: int) -> list[list]:
    """Consecutive chunks of ``batch_size`` (the last may be shorter)."""
    return [list(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
