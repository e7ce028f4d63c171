"""Settings are read from TUNELOOP_* variables and validated with actionable messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.settings import Settings, load_settings


def test_defaults_are_the_embedded_setup(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("TUNELOOP_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.data_dir == Path(".tuneloop")
    assert s.resolved_database_url.startswith("sqlite:///") and s.resolved_database_url.endswith("tuneloop.db")
    assert s.engine_urls == []
    assert s.resolved_base_model.name == "SmolLM2-135M-Instruct"


def test_environment_is_read_with_prefix():
    s = load_settings({"TUNELOOP_ENGINE_URLS": "http://a:8000/, http://b:8000", "TUNELOOP_PORT": "9000",
                       "TUNELOOP_DATA_DIR": "/tmp/x"})
    assert s.engine_urls == ["http://a:8000", "http://b:8000"]
    assert s.port == 9000
    assert s.resolved_database_url == "sqlite:////tmp/x/tuneloop.db"


def test_cross_field_rule_says_what_to_change():
    with pytest.raises(ValidationError, match="max_cpu_loras \\(2\\) must be >= max_loras \\(4\\)"):
        Settings(max_loras=4, max_cpu_loras=2)


def test_unsupported_database_is_refused():
    with pytest.raises(ValidationError, match="postgresql\\+psycopg"):
        Settings(database_url="mysql://x")


def test_out_of_range_values_are_refused():
    with pytest.raises(ValidationError):
        Settings(engine_memory_fraction=1.5)


def test_engine_extra_args_are_shell_split_and_reach_the_engine_command(tmp_path):
    from serving.engine_process import EngineProcess

    s = load_settings({"TUNELOOP_ENGINE_EXTRA_ARGS": "--tool-call-parser 'hermes' --enable-auto-tool-choice",
                       "TUNELOOP_DATA_DIR": str(tmp_path)})
    assert s.engine_extra_args == ["--tool-call-parser", "hermes", "--enable-auto-tool-choice"]
    assert EngineProcess(s).command[-3:] == s.engine_extra_args
