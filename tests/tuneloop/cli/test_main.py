"""The tuneloop CLI: every command has --help; tenants, keys and adapters work on the store."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from tuneloop.cli.main import app

COMMANDS = [
    [], ["models"], ["models", "import-default"], ["tenants"], ["tenants", "create"],
    ["tenants", "list"], ["keys"], ["keys", "create"], ["keys", "revoke"], ["adapters"],
    ["adapters", "register"], ["adapters", "list"], ["adapters", "show"], ["adapters", "promote"],
    ["adapters", "rollback"], ["serve"], ["tenants", "delete"], ["files", "delete"],
    ["adapters", "delete"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.fixture
def env(tmp_path, base_model_dir, monkeypatch):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    monkeypatch.delenv("TUNELOOP_ADMIN_KEY", raising=False)
    monkeypatch.delenv("TUNELOOP_DATABASE_URL", raising=False)


def test_tenant_key_adapter_lifecycle(env, lora_factory):
    run = CliRunner().invoke
    r = run(app, ["tenants", "create", "acme"])
    assert r.exit_code == 0, r.output
    assert "generated admin key" in r.output, "first start prints the generated admin key once"
    assert "generated admin key" not in run(app, ["tenants", "list"]).output
    r = run(app, ["keys", "create", "acme"])
    assert re.search(r"tl-[\w-]{20,}", r.output)
    r = run(app, ["adapters", "register", "bot", str(lora_factory(8)), "-t", "acme"])
    assert r.exit_code == 0 and "bot@v1" in r.output
    run(app, ["adapters", "register", "bot", str(lora_factory(8)), "-t", "acme"])
    assert run(app, ["adapters", "promote", "bot", "2", "-t", "acme"]).exit_code == 0
    r = run(app, ["adapters", "rollback", "bot", "-t", "acme"])
    assert "bot@v1 is the champion" in r.output
    r = run(app, ["adapters", "show", "bot", "-t", "acme"])
    assert '"champion": "bot@v1"' in r.output
    r = run(app, ["tenants", "create", "acme"])
    assert r.exit_code == 1 and "already exists" in r.output
    r = run(app, ["keys", "revoke", "1"])
    assert r.exit_code == 0


def test_unknown_tenant_is_a_clear_error(env):
    r = CliRunner().invoke(app, ["keys", "create", "nobody"])
    assert r.exit_code == 1
    assert "tenant 'nobody' does not exist" in r.output
