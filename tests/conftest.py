"""Session-wide fixtures shared by every test package.

The default base model is imported once into the repository's ``.tuneloop/models`` (the same
place ``make run`` uses), so tests never convert it twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The default base model as a Hugging Face directory (imported on first use)."""
    from services.base_model import import_default_model

    target = REPO_ROOT / ".tuneloop" / "models" / "SmolLM2-135M-Instruct"
    path, _ = import_default_model(target)
    return path
