"""Adapters made with PEFT for registry tests (untrained: validation looks at shapes, not skill)."""

from __future__ import annotations

import io
import tarfile
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


def tar_gz(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """Build a .tar.gz from (name, data, kind) with kind in file|symlink|hardlink|fifo|dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE,
                         "chardev": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = (data or b"/etc/passwd").decode()
            tar.addfile(info)
    return buf.getvalue()


def tar_dir(directory: Path, prefix: str = "adapter") -> bytes:
    entries = [(f"{prefix}/{p.name}", p.read_bytes(), "file") for p in sorted(directory.iterdir()) if p.is_file()]
    return tar_gz(entries)
