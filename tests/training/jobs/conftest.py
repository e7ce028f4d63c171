"""Fixtures for job tests: a platform on SQLite, a tenant, and a PEFT adapter standing in for a run's output."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def platform(tmp_path, base_model_dir):
    from services.platform import Platform
    from services.settings import Settings

    p = Platform.open(Settings(data_dir=tmp_path / "data", base_model=str(base_model_dir),
                               admin_key="admin-test-key", base_model_name="base"))
    yield p
    p.close()


@pytest.fixture
def tenant(platform):
    from services.tenants import create_tenant

    with platform.store.write() as session:
        row = create_tenant(session, "acme")
    return row


@pytest.fixture(scope="session")
def peft_adapter(base_model_dir, tmp_path_factory) -> Path:
    """An untrained PEFT LoRA (r=4) on the base model, standing in for a run's output."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
                   ).save_pretrained(str(out))
    return out
