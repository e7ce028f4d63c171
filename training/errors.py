"""Exceptions of the training package; each maps to an HTTP status through services.errors."""

from __future__ import annotations

from dataclasses import dataclass

from services.errors import InvalidInput, TuneloopError

MAX_LISTED_ISSUES = 50


@dataclass(frozen=True)
class DatasetIssue:
    """One problem in a dataset file; ``line`` is 1-based, None for the whole file."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


class DatasetError(InvalidInput):
    """A dataset file has problems; ``issues`` lists every one with its line number."""

    code = "invalid_dataset"

    def __init__(self, issues: list[DatasetIssue], *, name: str = "dataset") -> None:
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
