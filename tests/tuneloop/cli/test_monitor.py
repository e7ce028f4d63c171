"""``tuneloop monitor``: --host/--port choose where /metrics is served, for this run only."""

from __future__ import annotations

from typer.testing import CliRunner

from tuneloop.cli import logs
from tuneloop.cli.main import app


def test_host_and_port_options_override_the_settings(tmp_path, base_model_dir, monkeypatch):
    import uvicorn

    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    calls: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr(logs, "configure_logging", lambda level: None)
    r = CliRunner().invoke(app, ["monitor", "--host", "0.0.0.0", "--port", "9200"])
    assert r.exit_code == 0, r.output
    assert "http://0.0.0.0:9200/metrics" in r.output
    monkeypatch.setenv("TUNELOOP_MONITOR_METRICS_PORT", "9300")
    assert CliRunner().invoke(app, ["monitor"]).exit_code == 0
    assert [(c["host"], c["port"]) for c in calls] == [("0.0.0.0", 9200), ("127.0.0.1", 9300)]
