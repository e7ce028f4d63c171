"""When a run scores its held-out split, and when it stops early (pure: numbers in and out).

A run validates every ``validate_every`` optimizer steps (0: at the end of every epoch) and
always at its last step. :class:`ValidationState` keeps the best validation loss, its step and
how many validations in a row did not improve on it; it travels in every checkpoint, so a resumed
run keeps its best step and stops where the uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ValidationState:
    """The validations of a run so far."""

    best_loss: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    """Validations since the best one (none of them improved on it)."""
    validations: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationState:
        return cls(**data)


def is_validation_step(done: int, total: int, every: int, steps_per_epoch: int) -> bool:
    """Whether the run validates after optimizer step ``done`` (1-based) of ``total``: every
    ``every`` steps, or at the last step of each epoch when ``every`` is 0; always at ``total``."""
    if done == total:
        return True
    return done % (every or max(1, steps_per_epoch)) == 0


def record_validation(state: ValidationState, step: int, loss: float, min_delta: float
                      ) -> ValidationState:
    """``state`` after validation loss ``loss`` at ``step``: a new best when it is lower than the
    best by more than ``min_delta`` (the first validation always is), else one more bad one."""
    validations = state.validations + 1
    if state.best_loss is None or loss < state.best_loss - min_delta:
        return ValidationState(loss, step, 0, validations)
    return replace(state, bad_validations=state.bad_validations + 1, validations=validations)


def should_stop(state: ValidationState, patience: int) -> bool:
    """True when the last ``patience`` validations did not improve (never when patience is 0)."""
    return patience > 0 and state.bad_validations >= patience
