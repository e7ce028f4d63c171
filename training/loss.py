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
    """Run the model on a collated batch (packed or padded) and return its token loss sum."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    return token_loss_sum(logits, batch["labels"])
