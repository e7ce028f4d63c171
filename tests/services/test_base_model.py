"""The default base model import yields a working Hugging Face model with a fingerprint."""

from __future__ import annotations

import json

from services.base_model import FINGERPRINT_FILE, compute_fingerprint, import_default_model


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
