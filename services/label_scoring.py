"""Label probabilities from first-token scoring over a label set's token trie: the pure core
shared by serving (``/v1/classify`` on the engine, :mod:`serving.classify`) and training (the
same computation from PEFT's logits for the parity check). The method is described in
:mod:`serving.classify`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.errors import InvalidInput

MIN_FLOOR = 1e-12

Prefix = tuple[int, ...]


@dataclass(frozen=True)
class BranchPoint:
    """A token prefix of the reply where labels diverge; ``children`` maps next token -> labels."""

    prefix: Prefix
    children: Mapping[int, tuple[str, ...]]


@dataclass(frozen=True)
class ScoringPlan:
    """Branch points to query; ``paths[label]`` lists (prefix, token) choices along the label."""

    branch_points: tuple[BranchPoint, ...]
    paths: Mapping[str, tuple[tuple[Prefix, int], ...]]

    @property
    def root(self) -> BranchPoint:
        return self.branch_points[0]

    @property
    def deeper(self) -> tuple[BranchPoint, ...]:
        """Branch points below the root: labels that share a first token."""
        return self.branch_points[1:]


def plan_scoring(label_tokens: Mapping[str, Sequence[int]]) -> ScoringPlan:
    """Build the branch points for labels given as token sequences (end-of-turn included)."""
    branch_points: list[BranchPoint] = []
    paths: dict[str, list[tuple[Prefix, int]]] = {label: [] for label in label_tokens}
    seqs = {label: tuple(tokens) for label, tokens in label_tokens.items()}

    def visit(prefix: Prefix, labels: list[str]) -> None:
        depth = len(prefix)
        groups: dict[int, list[str]] = {}
        for label in labels:
            if len(seqs[label]) <= depth:
                raise InvalidInput(
                    f"labels {labels!r} are indistinguishable after tokenization", param="labels"
                )
            groups.setdefault(seqs[label][depth], []).append(label)
        if len(groups) > 1 or depth == 0:
            branch_points.append(
                BranchPoint(prefix, {tok: tuple(group) for tok, group in groups.items()})
            )
            for tok, group in groups.items():
                for label in group:
                    paths[label].append((prefix, tok))
        for tok, group in groups.items():
            if len(group) > 1:
                visit(prefix + (tok,), group)

    visit((), list(seqs))
    return ScoringPlan(tuple(branch_points), {k: tuple(v) for k, v in paths.items()})


def branch_distribution(
    tokens: Sequence[int], observed: Mapping[int, float], *, floor: float | None = None
) -> dict[int, float]:
    """Probabilities of ``tokens`` (normalised to sum 1) from observed token -> logprob.

    Tokens missing from ``observed`` get the floor described in the module docstring.
    """
    probs = {tok: math.exp(lp) for tok, lp in observed.items()}
    missing = [tok for tok in tokens if tok not in probs]
    if missing:
        if floor is None:
            residual = max(0.0, 1.0 - sum(probs.values()))
            lowest = min(probs.values(), default=1.0)
            floor = min(lowest, residual / len(missing))
        floor = max(floor, MIN_FLOOR)
    raw = {tok: probs.get(tok, floor or MIN_FLOOR) for tok in tokens}
    total = sum(raw.values())
    return {tok: p / total for tok, p in raw.items()}


def label_probabilities(
    plan: ScoringPlan, observations: Mapping[Prefix, Mapping[int, float]]
) -> dict[str, float]:
    """Probability of every label (sums to 1) from logprobs observed at each branch point.

    ``observations[prefix]`` maps token id -> logprob at that branch point; a branch point with
    no observation counts as uniform over its tokens.
    """
    dists = {
        bp.prefix: branch_distribution(list(bp.children), observations.get(bp.prefix, {}),
                                       floor=1.0 if bp.prefix not in observations else None)
        for bp in plan.branch_points
    }
    result = {}
    for label, path in plan.paths.items():
        p = 1.0
        for prefix, tok in path:
            p *= dists[prefix][tok]
        result[label] = p
    total = sum(result.values())  # 1 up to rounding
    return {label: p / total for label, p in result.items()}
