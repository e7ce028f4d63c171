"""Rebuild ``vader_domains.jsonl`` (drift calibration texts) from the PyPI sdist ``vaderSentiment==3.3.2``.

Usage (no network needed once the sdist is on disk)::

    pip download --no-deps --no-binary :all: -d /tmp/vs vaderSentiment==3.3.2
    python tests/data/drift/build.py /tmp/vs/vaderSentiment-3.3.2.tar.gz

Deterministic: per domain, texts are ordered by the sha256 of their bytes and the first
``PER_DOMAIN`` distinct ones are kept. See README.md.
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
PER_DOMAIN = 2500
MIN_CHARS, MAX_CHARS = 15, 200


def read_ground_truth(sdist: Path) -> dict[str, bytes]:
    data = sdist.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"unexpected sdist sha256 {digest}; expected {SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        return {d: inner.extractfile(f"hutto_ICWSM_2014/{n}").read() for d, n in DOMAINS.items()}


def build(sdist: Path) -> list[dict]:
    rows: list[dict] = []
    seen: set[str] = set()
    for domain, raw in read_ground_truth(sdist).items():
        items = []
        for line in raw.decode("utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            source_id, score, text = parts[0], float(parts[1]), "\t".join(parts[2:])
            text = " ".join(html.unescape(text).split())
            if "\ufffd" in text or not MIN_CHARS <= len(text) <= MAX_CHARS:
                continue
            items.append({"text": text, "domain": domain, "score": round(score, 3),
                          "source": f"{DOMAINS[domain]}:{source_id}"})
        items.sort(key=lambda r: hashlib.sha256(r["text"].encode()).hexdigest())
        taken = 0
        for item in items:
            key = item["text"].lower()
            if key in seen:
                continue
            seen.add(key)
            rows.append(item)
            taken += 1
            if taken == PER_DOMAIN:
                break
        if taken < PER_DOMAIN:
            raise SystemExit(f"{domain}: only {taken} usable texts, need {PER_DOMAIN}")
    return rows


def main() -> None:
    out = Path(__file__).with_name("vader_domains.jsonl")
    rows = build(Path(sys.argv[1]))
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    print(f"wrote {len(rows)} texts to {out}")


if __name__ == "__main__":
    main()
