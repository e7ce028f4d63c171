"""The deterministic data schedule of a run: which examples each worker sees at each step.

A function of (example lengths, seed, epochs, batch size, grad accumulation, packing, world
size) only, so every worker computes the same plan, a restarted worker resumes at step k with
exactly the batches it would have seen, and the same seed gives the same run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from training.packing import plan_rows

Unit = list[int]
"""Example indices trained as one row: one example, or several packed together."""
MicroBatch = list[Unit]
Step = list[MicroBatch]


def epoch_units(
    lengths: Sequence[int], epoch: int, seed: int, packing: bool, max_length: int
) -> list[Unit]:
    """Shuffled rows for one epoch: single examples, or first-fit packed groups."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not packing:
        return [[i] for i in order]
    rows = plan_rows([lengths[i] for i in order], max_length)
    units = [[order[j] for j in row] for row in rows]
    rng.shuffle(units)
    return units


def plan_steps(
    lengths: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    grad_accum: int,
    packing: bool,
    max_length: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    max_steps: int | None = None,
) -> list[Step]:
    """Optimizer steps for ``rank``: each a list of micro-batches of units.

    Every rank gets the same number of micro-batches per epoch (the last group of micro-batches
    is completed by cycling from the epoch's start), so all ranks take the same number of steps.
    """
    steps: list[Step] = []
    for epoch in range(epochs):
        units = epoch_units(lengths, epoch, seed, packing, max_length)
        micro = [units[i : i + batch_size] for i in range(0, len(units), batch_size)]
        per_rank = math.ceil(len(micro) / world_size)
        padded = [micro[i % len(micro)] for i in range(per_rank * world_size)]
        mine = padded[rank::world_size]
        steps.extend(mine[i : i + grad_accum] for i in range(0, len(mine), grad_accum))
    return steps[:max_steps] if max_steps is not None else steps
