"""``tuneloop files delete``, ``adapters delete`` and ``tenants delete`` on the store: the
same service functions as the HTTP routes (tests/tuneloop/api/test_deletes.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.platform import Platform
from services.settings import Settings
from services.store.models import Tenant
from tests.support.api import classification_lines
from tuneloop.cli.main import app


@pytest.fixture
def env(tmp_path, base_model_dir, monkeypatch):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    monkeypatch.setenv("TUNELOOP_ADMIN_KEY", "admin-test-key")
    monkeypatch.delenv("TUNELOOP_DATABASE_URL", raising=False)


def test_deletes_from_the_command_line(env, tmp_path, lora_factory):
    run = CliRunner().invoke
    assert run(app, ["tenants", "create", "acme"]).exit_code == 0
    data = tmp_path / "train.jsonl"
    data.write_bytes(classification_lines())
    file_id = run(app, ["files", "upload", str(data), "-t", "acme"]).output.split()[0]
    for _ in range(3):
        assert run(app, ["adapters", "register", "bot", str(lora_factory(8)),
                         "-t", "acme"]).exit_code == 0

    r = run(app, ["adapters", "delete", "bot", "--version", "1", "-t", "acme"])
    assert r.exit_code == 1 and "champion" in r.output
    r = run(app, ["adapters", "delete", "bot", "--version", "3", "-t", "acme"])
    assert r.exit_code == 0 and "deleted bot@v3" in r.output
    r = run(app, ["files", "delete", file_id, "-t", "acme"])
    assert r.exit_code == 0 and file_id in r.output
    assert run(app, ["adapters", "delete", "bot", "-t", "acme"], input="n\n").exit_code == 1
    r = run(app, ["adapters", "delete", "bot", "-t", "acme", "--yes"])
    assert r.exit_code == 0 and "deleted adapter bot" in r.output
    r = run(app, ["tenants", "delete", "acme", "--yes"])
    assert r.exit_code == 0 and "deleted tenant acme" in r.output
    platform = Platform.open(Settings())
    try:
        with platform.store.read() as s:
            assert s.query(Tenant).count() == 0
        blobs = platform.settings.data_dir / "artifacts" / "blobs"
        assert not [path for path in blobs.rglob("*") if path.is_file()]
    finally:
        platform.close()
