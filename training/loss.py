"""Token-level causal LM loss: summed over target tokens, with the count to normalize by.

Returning (sum, count) instead of a mean lets packed and unpacked batches, gradient
accumulation and several workers all normalize by the same thing: the number of target tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from training.tokenize import IGNORE_INDEX


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropy over positions whose label != -100, their count)."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return total, int((shift_labels != IGNORE_INDEX).sum())


def batch_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run the model on a collated batch (packed or padded) and return its token loss sum.

    Only positions that predict a target token go through the LM head (``logits_to_keep``):
    with loss on assistant tokens only most positions predict nothing, and the head's
    (tokens x vocabulary) logits are the largest tensor of a step.
    """
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    labels = batch["labels"].to(device)
    targets = labels[:, 1:] != IGNORE_INDEX  # position p predicts token p + 1
    positions = targets.any(dim=0).nonzero().squeeze(1)
    if positions.numel() == 0:
        zero = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
        return zero, 0
    logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    kept_labels = labels[:, positions + 1]
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.size(-1)), kept_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    return total, int((kept_labels != IGNORE_INDEX).sum())
