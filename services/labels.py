"""The one check of a classifier's label set (registration, jobs and serving use it)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.errors import InvalidInput

MAX_LABELS = 64
"""Default cap on a label set (``TUNELOOP_MAX_LABELS``): each classify call tokenizes and scores
every label on the engine."""
MAX_LABEL_CHARS = 64
"""Default cap on one label's length in characters (``TUNELOOP_MAX_LABEL_CHARS``)."""


def check_labels(labels: Sequence[object] | None, *, max_count: int | None = None,
                 max_chars: int | None = None) -> list[str]:
    """The labels, stripped; raises :class:`InvalidInput` naming the problem if there are fewer
    than 2, more than ``max_count``, one is blank, longer than ``max_chars`` or repeats."""
    labels = labels or []
    if max_count is not None and len(labels) > max_count:
        raise InvalidInput(
            f"a classification adapter may have at most {max_count} labels, got {len(labels)}; "
            "merge labels or raise TUNELOOP_MAX_LABELS", param="labels")
    cleaned = [str(label).strip() for label in labels]
    if len(cleaned) < 2:
        raise InvalidInput(
            f"a classification adapter needs at least 2 distinct, non-empty labels, got "
            f"{cleaned!r}", param="labels")
    long = [label for label in cleaned if max_chars is not None and len(label) > max_chars]
    if long:
        raise InvalidInput(
            f"a label is {len(long[0])} characters (starting {long[0][:32]!r}); at most "
            f"{max_chars} are allowed (TUNELOOP_MAX_LABEL_CHARS); shorten it", param="labels")
    if any(not label for label in cleaned):
        raise InvalidInput(f"labels must not be blank, got {cleaned!r}", param="labels")
    repeated = sorted(label for label, n in Counter(cleaned).items() if n > 1)
    if repeated:
        raise InvalidInput(f"labels must be distinct; repeated: {repeated!r}", param="labels")
    return cleaned
