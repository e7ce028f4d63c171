"""The default base model import yields a working Hugging Face model with a fingerprint."""

from __future__ import annotations

import json

import pytest

from services.base_model import FINGERPRINT_FILE, compute_fingerprint, import_default_model
from services.errors import InvalidInput


def test_import_is_idempotent_and_fingerprinted(base_model_dir):
    path, imported = import_default_model(base_model_dir)
    assert path == base_model_dir and imported is False
    cached = json.loads((base_model_dir / FINGERPRINT_FILE).read_text())
    assert cached["fingerprint"] == compute_fingerprint(base_model_dir)


def test_imported_model_answers_capital_of_france(base_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_a_training_machine_finds_its_own_copy_of_the_base_model(base_model_dir, tmp_path):
    from services.base_model import model_fingerprint, resolve_base_model

    fingerprint = model_fingerprint(base_model_dir)
    # its TUNELOOP_BASE_MODEL, when it is there
    assert resolve_base_model(base_model_dir, fingerprint,
                              default_dir=tmp_path / "never") == base_model_dir
    assert not (tmp_path / "never").exists()
    # not there: the default model (already imported in this default dir)
    assert resolve_base_model(tmp_path / "missing", fingerprint,
                              default_dir=base_model_dir) == base_model_dir
    # another model than the job's: refused, naming the fix
    with pytest.raises(InvalidInput, match="set TUNELOOP_BASE_MODEL here") as info:
        resolve_base_model(base_model_dir, "0" * 64, default_dir=tmp_path / "never")
    assert "000000000000" in str(info.value)
