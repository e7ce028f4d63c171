"""Real texts for drift tests: ``tests/data/drift/vader_domains.jsonl`` grouped by domain."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "drift" / "vader_domains.jsonl"
DOMAINS = ("tweet", "movie_review", "product_review", "editorial")


@lru_cache(maxsize=1)
def texts_by_domain() -> dict[str, tuple[str, ...]]:
    """The 2,500 texts of each of the four domains, in file order."""
    grouped: dict[str, list[str]] = {d: [] for d in DOMAINS}
    with DATA.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            grouped[row["domain"]].append(row["text"])
    return {d: tuple(t) for d, t in grouped.items()}
