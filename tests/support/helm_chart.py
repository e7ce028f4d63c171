"""The chart under test: the helm binary, scenario values files and rendering helpers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tuneloop"
SCENARIOS = {p.stem: p for p in sorted((CHART / "ci").glob("*.yaml"))}
RELEASE, NAMESPACE = "rel", "tl"
# The one value the defaults leave to the user: artifacts live on S3 unless artifacts.type=pvc.
DEFAULT_SETS = ("--set", "artifacts.s3.url=s3://tuneloop-artifacts/default")


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm: .tools/bin/helm (scripts/install-helm.sh) or PATH. Missing helm fails."""
    local = REPO / ".tools" / "bin" / "helm"
    found = str(local) if local.is_file() else shutil.which("helm")
    if not found:
        pytest.fail("helm is not installed: run `bash scripts/install-helm.sh` (make test does it)")
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm, *args], check=False, capture_output=True, text=True, timeout=120)


def render(helm: str, values: Path | None = None, *extra: str) -> list[tuple[str, dict]]:
    """``helm template`` of the chart: (template file, object) for every non-empty document.

    Without a values file the chart defaults are rendered with :data:`DEFAULT_SETS`."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra]
    args += ["-f", str(values)] if values is not None else list(DEFAULT_SETS)
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stderr
    docs = []
    for chunk in result.stdout.split("\n---\n"):
        doc = yaml.safe_load(chunk)
        if doc:
            source = next((ln for ln in chunk.splitlines() if ln.startswith("# Source: ")), "")
            docs.append((source.removeprefix("# Source: tuneloop/templates/"), doc))
    return docs


@pytest.fixture(scope="session")
def rendered(helm: str) -> dict[str, list[tuple[str, dict]]]:
    """Every scenario under ci/ plus the chart defaults (with an S3 URL), rendered once per
    session."""
    out = {"default": render(helm)}
    out.update({name: render(helm, path) for name, path in SCENARIOS.items()})
    return out
