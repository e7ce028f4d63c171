"""``tuneloop serve``: --host/--port override the settings for this run; logging is set up."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tuneloop.cli import logs
from tuneloop.cli.main import app


@pytest.fixture
def started(tmp_path, base_model_dir, monkeypatch):
    """What ``uvicorn.run`` and the logging setup were called with (nothing is started)."""
    import uvicorn

    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    monkeypatch.setenv("TUNELOOP_LOG_LEVEL", "debug")
    calls: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.update(app=app, **kw))
    monkeypatch.setattr(logs, "configure_logging", lambda level: calls.update(logging=level))
    return calls


def test_host_and_port_options_override_the_settings(started):
    r = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "9000", "--no-monitor"])
    assert r.exit_code == 0, r.output
    assert (started["host"], started["port"]) == ("0.0.0.0", 9000)
    assert "listening on http://0.0.0.0:9000" in r.output
    assert started["logging"] == "debug"


def test_defaults_come_from_the_settings_and_options_are_validated(started, monkeypatch):
    monkeypatch.setenv("TUNELOOP_PORT", "8500")
    r = CliRunner().invoke(app, ["serve", "--no-monitor"])
    assert r.exit_code == 0, r.output
    assert (started["host"], started["port"]) == ("127.0.0.1", 8500)
    r = CliRunner().invoke(app, ["serve", "--port", "8100"])  # the local engine's port
    assert r.exit_code == 2 and "TUNELOOP_ENGINE_PORT" in r.output
