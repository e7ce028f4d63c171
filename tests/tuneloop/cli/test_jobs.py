"""``tuneloop files`` and ``tuneloop jobs`` on the configured store (the run itself scripted)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tests.support.scripted_runner import ScriptedRunner
from tuneloop.cli.main import app

COMMANDS = [["files"], ["files", "upload"], ["files", "list"], ["files", "show"], ["jobs"],
            ["jobs", "create"], ["jobs", "list"], ["jobs", "show"], ["jobs", "events"],
            ["jobs", "cancel"], ["jobs", "wait"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output, result.output


@pytest.fixture
def env(tmp_path, base_model_dir, monkeypatch):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL", str(base_model_dir))
    monkeypatch.setenv("TUNELOOP_BASE_MODEL_NAME", "base")
    monkeypatch.setenv("TUNELOOP_ADMIN_KEY", "admin-test-key")
    monkeypatch.delenv("TUNELOOP_DATABASE_URL", raising=False)
    assert CliRunner().invoke(app, ["tenants", "create", "acme"]).exit_code == 0


def write_dataset(path, n=16):
    path.write_text("".join(json.dumps({"text": f"cli text {i}", "label": "ab"[i % 2]}) + "\n"
                            for i in range(n)))
    return path


def test_upload_create_detached_list_show_events_cancel_wait(env, tmp_path):
    run = CliRunner().invoke
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": "a"}\n{oops\n{"text": "y", "label": "b"}\n')
    r = run(app, ["files", "upload", str(bad), "-t", "acme"])
    assert r.exit_code == 1 and "line 2: invalid JSON" in r.output
    r = run(app, ["files", "upload", str(write_dataset(tmp_path / "d.jsonl")), "-t", "acme"])
    assert r.exit_code == 0, r.output
    file_id = r.output.split()[0]
    assert file_id.startswith("file-") and "16 examples" in r.output
    assert file_id in run(app, ["files", "list", "-t", "acme"]).output

    r = run(app, ["jobs", "create", "-f", file_id, "-t", "acme", "--suffix", "cli",
                  "--hp", "n_epochs=2", "--hp", "target_modules=all-linear", "--detach"])
    assert r.exit_code == 0, r.output
    job_id = r.output.strip().splitlines()[-1]
    shown = json.loads(run(app, ["jobs", "show", job_id, "-t", "acme"]).output)
    assert shown["status"] == "validating_files" and shown["hyperparameters"]["n_epochs"] == 2
    assert job_id in run(app, ["jobs", "list", "-t", "acme"]).output
    assert "created" in run(app, ["jobs", "events", job_id, "-t", "acme"]).output
    r = run(app, ["jobs", "cancel", job_id, "-t", "acme"])
    assert r.exit_code == 0 and "cancelled" in r.output
    r = run(app, ["jobs", "wait", job_id, "-t", "acme", "--poll-s", "0.1"])
    assert r.exit_code == 1 and "cancelled" in r.output
    r = run(app, ["jobs", "show", "ftjob-nope", "-t", "acme"])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_create_runs_the_job_here_with_a_progress_bar(env, tmp_path, monkeypatch, peft_adapter):
    import training.jobs.manager as manager_module

    monkeypatch.setattr(manager_module, "make_runner",
                        lambda settings: ScriptedRunner(peft_adapter, steps=3))
    r = CliRunner().invoke(app, ["jobs", "create", "-f", str(write_dataset(tmp_path / "d.jsonl")),
                                 "-t", "acme", "--suffix", "here"])
    assert r.exit_code == 0, r.output
    assert "uploaded" in r.output and "3/3" in r.output and "loss" in r.output
    assert r.output.strip().splitlines()[-1] == "here@v1"
    assert "published here@v1" in r.output
