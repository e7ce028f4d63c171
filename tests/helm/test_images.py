"""The Dockerfiles the chart's images come from (no Docker engine here: static checks)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*[!e]"))  # not the .dockerignore files


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.gateway", "Dockerfile.training"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_through_bootstrap_and_copy_what_exists(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    # The project's own install script, so images and `make run` never drift apart.
    assert "bash scripts/bootstrap.sh" in text
    assert re.search(r"^ARG TUNELOOP_EXTRA=(cpu|gpu)$", text, re.MULTILINE)
    for source in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (REPO / path).exists(), f"{dockerfile.name} copies missing {path}"
    # The chart runs tuneloop pods as uid 1000 with runAsNonRoot.
    assert "USER 1000:1000" in text
    assert (REPO / "docker" / f"{dockerfile.name}.dockerignore").is_file()
