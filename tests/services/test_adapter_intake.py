"""Registration stores only what an adapter may carry, with its config rebuilt from known keys."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from services.adapter_intake import register_adapter_archive, register_adapter_dir
from services.errors import InvalidInput
from services.tenants import create_tenant


@pytest.fixture
def acme(platform):
    with platform.store.write() as s:
        create_tenant(s, "acme")
    return platform


def _hostile_copy(lora_factory, tmp_path):
    adapter = shutil.copytree(lora_factory(8), tmp_path / "adapter")
    (adapter / "training_args.bin").write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle
    (adapter / "extra.safetensors").write_bytes(b"unvalidated")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["auto_mapping"] = {"base_model_class": "Evil", "parent_library": "os"}
    config["something_new"] = "x" * 10_000
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


def test_only_the_config_and_the_weights_are_stored(acme, lora_factory, tmp_path):
    version = register_adapter_dir(acme, "acme", "bot", _hostile_copy(lora_factory, tmp_path))
    stored = acme.artifacts.materialize_dir(version.artifact_key, into=tmp_path / "cache")
    assert sorted(p.name for p in stored.iterdir() if p.name != ".complete") == [
        "adapter_config.json", "adapter_model.safetensors"]
    config = json.loads((stored / "adapter_config.json").read_text())
    assert "auto_mapping" not in config and "something_new" not in config
    assert config["peft_type"] == "LORA" and config["r"] == 8 and config["lora_alpha"] == 16
    assert version.size_bytes == sum(p.stat().st_size for p in stored.iterdir())


@pytest.mark.parametrize("key, value", [
    ("lora_alpha", float("nan")), ("lora_alpha", "16"), ("lora_dropout", float("inf")),
    ("target_modules", [1, 2]), ("bias", "everything"), ("use_dora", "yes"), ("r", True),
])
def test_bad_values_of_known_config_keys_are_refused(acme, lora_factory, tmp_path, key, value):
    adapter = shutil.copytree(lora_factory(8), tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config[key] = value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidInput, match=f"{key}|invalid rank"):
        register_adapter_dir(acme, "acme", "bot", adapter)


def test_an_archive_of_the_folder_itself_registers(acme, lora_factory, tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("needs the tar command")
    archive = tmp_path / "a.tar.gz"
    subprocess.run(["tar", "-C", str(lora_factory(8)), "-czf", str(archive), "."], check=True)
    assert register_adapter_archive(acme, "acme", "bot", archive).version == 1
