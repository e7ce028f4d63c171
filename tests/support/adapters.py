"""Fixtures: untrained PEFT adapters (validation and publishing look at shapes, not skill).

Registered as a plugin from ``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _save_lora(model, out: Path, r: int, targets="all-linear") -> Path:  # noqa: ANN001
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def lora_factory(base_model_dir, tmp_path_factory):
    """lora_factory(r=8, targets=...) -> a PEFT adapter dir on the default base model (cached)."""
    from transformers import AutoModelForCausalLM

    cache: dict = {}

    def make(r: int = 8, targets="all-linear") -> Path:
        key = (r, str(targets))
        if key not in cache:
            model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
            cache[key] = _save_lora(model, tmp_path_factory.mktemp(f"lora-r{r}"), r, targets)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def foreign_lora(tmp_path_factory) -> Path:
    """A LoRA for a different (tiny, random) Llama: shapes do not fit the served base."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=1000)
    return _save_lora(LlamaForCausalLM(config), tmp_path_factory.mktemp("foreign"), 8)


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
