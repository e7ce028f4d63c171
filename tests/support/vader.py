"""The demo's labeled sentiment texts (tuneloop/data/vader_sentiment), shuffled reproducibly and
split into the old domains (tweets, movie reviews) and the new ones (editorials, product
reviews)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

DATA = (Path(__file__).resolve().parents[2] / "tuneloop" / "data" / "vader_sentiment"
        / "vader_sentiment.jsonl")
# Shuffled by a salted hash of the text (the file is ordered by domain and label; the unsalted
# hash was used to select it, so it orders by domain too).
ROWS = sorted((json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()),
              key=lambda r: hashlib.sha256(b"shuffle\0" + r["text"].encode()).hexdigest())
OLD = [r for r in ROWS if r["domain"] in ("tweet", "movie_review")]
NEW = [r for r in ROWS if r["domain"] in ("editorial", "product_review")]
SOURCES = {"tweet": "tweet", "movie_review": "film", "product_review": "product",
           "editorial": "news"}
"""Domain -> the label of the "which source is this text from" task."""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def source_examples(per_train: int, per_eval: int, max_chars: int = 70
                    ) -> tuple[list[dict], list[dict]]:
    """Short real texts labelled by their source (tweet, film, product, news): the first
    ``per_train`` of each source for training, the next ``per_eval`` held out."""
    seen: Counter[str] = Counter()
    train, held_out = [], []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if len(row["text"]) > max_chars:
            continue
        example = {"text": row["text"], "label": SOURCES[row["domain"]]}
        if seen[row["domain"]] < per_train:
            train.append(example)
        elif seen[row["domain"]] < per_train + per_eval:
            held_out.append(example)
        seen[row["domain"]] += 1
    return train, held_out


def source_files(tmp_path: Path, per_train: int = 12, per_eval: int = 8) -> tuple[Path, Path]:
    """:func:`source_examples` as a training and a held-out file."""
    train, held_out = source_examples(per_train, per_eval)
    return (write_jsonl(tmp_path / "train.jsonl", train),
            write_jsonl(tmp_path / "valid.jsonl", held_out))
