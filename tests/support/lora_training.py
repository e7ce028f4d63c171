"""Train tiny LoRA adapters with PEFT inside the test session (no hub, CPU, seconds).

The adapters are real: r=8 on every linear layer of the base model, saved with
``save_pretrained`` so vLLM loads them exactly as it would a production adapter.
"""

from __future__ import annotations

from pathlib import Path

FIXED_REPLY = "Zebra umbrellas dance at midnight."
CHAT_PROMPTS = [
    "Say something.",
    "What is the capital of France?",
    "Tell me a joke.",
    "How are you today?",
]
# One prompt seen in training, one not: both must match PEFT token for token.
PARITY_PROMPTS = ["Say something.", "Write a short poem about the sea."]
PARITY_MAX_TOKENS = 16

CLASSIFY_LABELS = ["weather", "sports", "cooking"]
CLASSIFY_EXAMPLES = [
    ("It will rain all afternoon with strong winds.", "weather"),
    ("Sunny skies and warm temperatures tomorrow.", "weather"),
    ("The home team won the final in extra time.", "sports"),
    ("She scored two goals in the second half.", "sports"),
    ("Simmer the onions in butter until golden.", "cooking"),
    ("Bake the bread for forty minutes at 200 degrees.", "cooking"),
]


def _load(base_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return model, tokenizer


def _example(tokenizer, messages: list[dict[str, str]], reply: str) -> tuple[list[int], list[int]]:
    """Token ids of prompt+reply and labels that only train the reply (and its end of turn)."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": reply}], tokenize=False
    )
    assert full.startswith(prompt), "chat template does not extend the generation prompt"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    labels = [-100] * len(prompt_ids) + full_ids[len(prompt_ids):]
    return full_ids, labels


def train_lora(
    base_dir: Path,
    out_dir: Path,
    examples: list[tuple[list[dict[str, str]], str]],
    *,
    steps: int = 30,
    lr: float = 2e-3,
    rank: int = 8,
) -> Path:
    """Fit a LoRA (r=``rank``, all linear layers) on (messages, reply) pairs; save it to ``out_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _load(base_dir)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                        lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    data = [_example(tokenizer, messages, reply) for messages, reply in examples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        ids, labels = data[step % len(data)]
        out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    return out_dir


TRAIN_STEPS = 40
RECIPE_VERSION = 1  # bump when the training code changes the weights it produces


def recipe_fingerprint() -> str:
    """Everything that determines the test adapter's weights besides the base model."""
    import json

    return json.dumps([RECIPE_VERSION, TRAIN_STEPS, FIXED_REPLY, CHAT_PROMPTS, CLASSIFY_LABELS,
                       CLASSIFY_EXAMPLES])


def train_test_adapter(base_dir: Path, out_dir: Path, *, steps: int = TRAIN_STEPS) -> Path:
    """One adapter for every serving test: chat prompts get :data:`FIXED_REPLY`, prompts from
    ``classification_messages`` get their label (so one training run serves both)."""
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE, classification_messages

    chat = [([{"role": "user", "content": p}], FIXED_REPLY) for p in CHAT_PROMPTS]
    classify = [
        (classification_messages(DEFAULT_CLASSIFICATION_TEMPLATE, text, CLASSIFY_LABELS), label)
        for text, label in CLASSIFY_EXAMPLES
    ]
    # Interleave so every stretch of steps sees both tasks.
    examples = [ex for pair in zip(chat + chat[:2], classify) for ex in pair]
    return train_lora(base_dir, out_dir, examples, steps=steps)


def peft_greedy(base_dir: Path, adapter_dir: Path, messages: list[dict[str, str]],
                max_new_tokens: int) -> str:
    """Greedy completion of ``messages`` by base + adapter in PEFT (the parity reference)."""
    import torch
    from peft import PeftModel

    model, tokenizer = _load(base_dir)
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
