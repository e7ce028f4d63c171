"""The Dockerfiles the chart's images come from (no Docker engine here: static checks)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [
    p for p in sorted((REPO / "docker").glob("Dockerfile.*")) if p.suffix != ".dockerignore"
]


def test_every_image_exists() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "Dockerfile.gateway",
        "Dockerfile.engine",
        "Dockerfile.training",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_every_python_package(dockerfile: Path) -> None:
    """pyproject's packages all reach the image, or the `tuneloop` entry point cannot import."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\S+)/ \S+$", dockerfile.read_text(), re.MULTILINE))
    assert {p.rstrip("*") for p in packages} <= copied


def test_engine_image_runs_tuneloop_engine_with_vllm() -> None:
    text = (REPO / "docker" / "Dockerfile.engine").read_text()
    # The chart's engine: vLLM behind tuneloop's middleware, not the plain vLLM image.
    assert re.search(r"^ARG TUNELOOP_EXTRA=gpu$", text, re.MULTILINE)
    assert 'CMD ["tuneloop", "engine", "--host", "0.0.0.0", "--port", "8000"]' in text


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
