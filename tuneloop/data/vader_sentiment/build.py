"""Rebuild ``vader_sentiment.jsonl`` from the PyPI sdist ``vaderSentiment==3.3.2``.

Usage (no network needed once the sdist is on disk)::

    pip download --no-deps --no-binary :all: -d /tmp/vs vaderSentiment==3.3.2
    python tuneloop/data/vader_sentiment/build.py /tmp/vs/vaderSentiment-3.3.2.tar.gz

The selection is deterministic: texts are ordered by the sha256 of their bytes, so the same
sdist always yields the same file. See README.md for the labelling rules.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import sys
import tarfile
from pathlib import Path

SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
DOMAINS = {
    "tweet": "tweets_GroundTruth.txt",
    "movie_review": "movieReviewSnippets_GroundTruth.txt",
    "product_review": "amazonReviewSnippets_GroundTruth.txt",
    "editorial": "nytEditorialSnippets_GroundTruth.txt",
}
PER_CELL = 70  # examples per (domain, label)
MIN_CHARS, MAX_CHARS = 15, 160


def label_for(score: float) -> str | None:
    """Mean human rating (-4..4) -> label; ambiguous middle ratings get no label."""
    if score >= 1.0:
        return "positive"
    if score <= -1.0:
        return "negative"
    if abs(score) <= 0.3:
        return "neutral"
    return None


def _member_bytes(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)  # None for a directory or link
    if member is None:
        raise SystemExit(f"{name} in the sdist is not a regular file")
    return member.read()


def read_ground_truth(sdist: Path) -> dict[str, bytes]:
    data = sdist.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"unexpected sdist sha256 {digest}; expected {SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_bytes = _member_bytes(outer, INNER_ARCHIVE)
    files = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for domain, name in DOMAINS.items():
            files[domain] = _member_bytes(inner, f"hutto_ICWSM_2014/{name}")
    return files


def build(sdist: Path) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    for domain, raw in read_ground_truth(sdist).items():
        cells: dict[str, list[dict]] = {"negative": [], "neutral": [], "positive": []}
        for line in raw.decode("utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            source_id, score, text = parts[0], float(parts[1]), "\t".join(parts[2:])
            text = " ".join(html.unescape(text).split())
            label = label_for(score)
            if label is None or "\ufffd" in text or not MIN_CHARS <= len(text) <= MAX_CHARS:
                continue
            cells[label].append(
                {"text": text, "label": label, "domain": domain, "score": round(score, 3),
                 "source": f"{DOMAINS[domain]}:{source_id}"}
            )
        for label, items in cells.items():
            items.sort(key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
            taken = 0
            for item in items:
                key = item["text"].lower()
                if key in seen:
                    continue
                seen.add(key)
                rows.append(item)
                taken += 1
                if taken == PER_CELL:
                    break
    return rows


def main() -> None:
    sdist = Path(sys.argv[1])
    out = Path(__file__).with_name("vader_sentiment.jsonl")
    rows = build(sdist)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    print(f"wrote {len(rows)} examples to {out}")


if __name__ == "__main__":
    main()
