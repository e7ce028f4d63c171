"""Job hyperparameters: OpenAI's ``"auto"`` defaults resolved against the dataset (pure).

OpenAI keys: ``n_epochs``, ``batch_size``, ``learning_rate_multiplier`` (each a number or
``"auto"``). tuneloop adds the LoRA and run shape keys in :data:`EXTRA_KEYS`; each maps onto the
:class:`training.config.TrainConfig` field of the same name (``n_epochs`` -> ``epochs``).
"""

from __future__ import annotations

import math
from typing import Any

from services.errors import InvalidInput

BASE_LEARNING_RATE = 2e-4
"""Learning rate at ``learning_rate_multiplier`` 1.0 (LoRA on a small model)."""

OPENAI_KEYS = ("n_epochs", "batch_size", "learning_rate_multiplier")
EXTRA_KEYS: dict[str, type | tuple[type, ...]] = {
    "lora_r": int, "lora_alpha": int, "lora_dropout": (int, float),
    "target_modules": (str, list), "max_length": int, "packing": bool,
    "grad_accum": int, "warmup_steps": int, "weight_decay": (int, float),
    "max_steps": int, "checkpoint_every": int, "eval_fraction": (int, float),
    "qlora": bool,  # GPU only; untested (no GPU in tuneloop's CI)
    "validate_every": int, "early_stopping_patience": int,
    "early_stopping_min_delta": (int, float),
}


def auto_epochs(n_examples: int) -> int:
    """3 epochs under 1,000 examples, 2 under 10,000, else 1 (small data needs more passes)."""
    if n_examples < 1_000:
        return 3
    return 2 if n_examples < 10_000 else 1


def auto_batch_size(n_examples: int) -> int:
    """8, but never more than a quarter of the data (keeps a few optimizer steps per epoch)."""
    return max(1, min(8, n_examples // 4))


def _number(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if not ok:
        raise InvalidInput(
            f"hyperparameters.{key}={value!r} has the wrong type; expected "
            f"{kind.__name__ if isinstance(kind, type) else ' or '.join(k.__name__ for k in kind)}",
            param=f"hyperparameters.{key}")
    return value


def resolve_hyperparameters(requested: dict[str, Any] | None, n_examples: int) -> dict[str, Any]:
    """Concrete values for every key: ``"auto"`` (or absent) OpenAI keys get dataset defaults.

    Raises InvalidInput naming an unknown key or a value of the wrong type.
    """
    requested = dict(requested or {})
    unknown = sorted(set(requested) - set(OPENAI_KEYS) - set(EXTRA_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown hyperparameter(s) {unknown}; use {list(OPENAI_KEYS) + list(EXTRA_KEYS)}",
            param="hyperparameters")
    resolved: dict[str, Any] = {}
    defaults = {"n_epochs": auto_epochs(n_examples), "batch_size": auto_batch_size(n_examples),
                "learning_rate_multiplier": 1.0}
    for key in OPENAI_KEYS:
        value = requested.get(key, "auto")
        if value == "auto" or value is None:
            resolved[key] = defaults[key]
            continue
        kind: type | tuple[type, ...] = (int, float) if key == "learning_rate_multiplier" else int
        resolved[key] = _number(key, value, kind)
        if resolved[key] <= 0:
            raise InvalidInput(f"hyperparameters.{key}={value} must be > 0 (or \"auto\")",
                               param=f"hyperparameters.{key}")
    for key, kind in EXTRA_KEYS.items():
        if key in requested and requested[key] is not None:
            resolved[key] = _number(key, requested[key], kind)
    return resolved


UPPER_BOUNDS: dict[str, float] = {
    "n_epochs": 100, "batch_size": 1024, "learning_rate_multiplier": 100, "lora_alpha": 4096,
    "grad_accum": 1024, "warmup_steps": 100_000, "checkpoint_every": 1_000_000,
    "lora_dropout": 0.9, "weight_decay": 10, "eval_fraction": 0.5,
    "validate_every": 1_000_000, "early_stopping_patience": 1_000,
    "early_stopping_min_delta": 10,
}
"""Largest accepted value of each numeric hyperparameter (lora_r, max_length and max_steps are
bounded by settings: the engines' rank, the model length, the operator's step budget)."""


def check_bounds(resolved: dict[str, Any], n_examples: int, *, max_lora_rank: int,
                 max_model_len: int, max_steps: int, workers: int = 1) -> None:
    """Refuse (400) values that no run should take: beyond the upper bounds, a rank the engines
    cannot serve, sequences longer than the model, or more steps than the operator allows."""
    limits = {**UPPER_BOUNDS, "lora_r": max_lora_rank, "max_length": max_model_len,
              "max_steps": max_steps}
    why = {"lora_r": " (TUNELOOP_MAX_LORA_RANK: the engines could not serve it)",
           "max_length": " (TUNELOOP_MAX_MODEL_LEN)", "max_steps": " (TUNELOOP_TRAIN_MAX_STEPS)"}
    for key, value in resolved.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInput(f"hyperparameters.{key}={value} must be a finite number",
                               param=f"hyperparameters.{key}")
    for key, limit in limits.items():
        value = resolved.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
            raise InvalidInput(f"hyperparameters.{key}={value} is over the limit of {limit}"
                               f"{why.get(key, '')}", param=f"hyperparameters.{key}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise InvalidInput(f"hyperparameters.{key}={value} must be >= 0",
                               param=f"hyperparameters.{key}")
    steps = estimated_steps(resolved, n_examples, workers)
    if steps > max_steps:
        raise InvalidInput(f"this job would run {steps} optimizer steps, over the limit of "
                           f"{max_steps} (TUNELOOP_TRAIN_MAX_STEPS); lower n_epochs, raise "
                           "batch_size or set max_steps", param="hyperparameters")


def train_config_fields(resolved: dict[str, Any]) -> dict[str, Any]:
    """The :class:`TrainConfig` keyword arguments for resolved hyperparameters."""
    fields = {k: v for k, v in resolved.items() if k in EXTRA_KEYS}
    fields["epochs"] = resolved["n_epochs"]
    fields["batch_size"] = resolved["batch_size"]
    fields["learning_rate"] = BASE_LEARNING_RATE * float(resolved["learning_rate_multiplier"])
    return fields


def estimated_steps(resolved: dict[str, Any], n_examples: int, workers: int = 1) -> int:
    """Optimizer steps without packing (for ETA before the run reports its own total)."""
    per_step = resolved["batch_size"] * resolved.get("grad_accum", 1) * max(1, workers)
    steps = resolved["n_epochs"] * math.ceil(n_examples / per_step)
    return min(steps, resolved["max_steps"]) if resolved.get("max_steps") else steps
