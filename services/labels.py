"""The one check of a classifier's label set (registration, jobs and serving use it)."""

from __future__ import annotations

from collections.abc import Sequence

from services.errors import InvalidInput


def check_labels(labels: Sequence[object] | None) -> list[str]:
    """The labels, stripped; raises :class:`InvalidInput` naming the problem if there are fewer
    than 2, one is blank or one repeats."""
    cleaned = [str(label).strip() for label in (labels or [])]
    if len(cleaned) < 2:
        raise InvalidInput(
            f"a classification adapter needs at least 2 distinct, non-empty labels, got "
            f"{cleaned!r}", param="labels")
    if any(not label for label in cleaned):
        raise InvalidInput(f"labels must not be blank, got {cleaned!r}", param="labels")
    repeated = sorted({label for label in cleaned if cleaned.count(label) > 1})
    if repeated:
        raise InvalidInput(f"labels must be distinct; repeated: {repeated!r}", param="labels")
    return cleaned
