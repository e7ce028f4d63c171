"""Exceptions of the training package; each maps to an HTTP status through services.errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.errors import InvalidInput, TuneloopError

if TYPE_CHECKING:
    from training.datasets import DatasetIssue

MAX_LISTED_ISSUES = 50


class DatasetError(InvalidInput):
    """A dataset file has problems; ``issues`` lists every one with its line number."""

    code = "invalid_dataset"

    def __init__(self, issues: list[DatasetIssue], *, name: str = "dataset"):
        self.issues = list(issues)
        shown = "\n".join(f"  {issue}" for issue in self.issues[:MAX_LISTED_ISSUES])
        more = len(self.issues) - MAX_LISTED_ISSUES
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{name} has {len(self.issues)} problem(s); fix them and upload again:\n{shown}{tail}"
        )


class TrainConfigError(InvalidInput):
    """A training configuration value is invalid; the message names the field and the fix."""

    code = "invalid_training_config"


class TrainingFailed(TuneloopError):
    """A training run ended without producing an adapter."""

    code = "training_failed"
