"""Hyperparameters are bounded at creation: nothing a run should not take reaches Ray."""

from __future__ import annotations

import pytest

from services.errors import InvalidInput
from training.jobs.hyperparameters import check_bounds, resolve_hyperparameters

LIMITS = {"max_lora_rank": 16, "max_model_len": 1024, "max_steps": 10_000}


def bounded(requested: dict, n_examples: int = 100) -> dict:
    resolved = resolve_hyperparameters(requested, n_examples)
    check_bounds(resolved, n_examples, **LIMITS)
    return resolved


def test_sane_values_pass():
    assert bounded({"n_epochs": 3, "lora_r": 16, "max_length": 512, "batch_size": 8})["lora_r"] == 16


@pytest.mark.parametrize("requested,match", [
    ({"lora_r": 64}, "TUNELOOP_MAX_LORA_RANK"),           # the engines could not serve it
    ({"max_length": 100_000}, "TUNELOOP_MAX_MODEL_LEN"),
    ({"n_epochs": 1_000_000}, "n_epochs=1000000 is over the limit of 100"),
    ({"batch_size": 1, "n_epochs": 100}, "would run 10000000 optimizer steps.*TUNELOOP_TRAIN_MAX_STEPS"),
    ({"max_steps": 10**9}, "TUNELOOP_TRAIN_MAX_STEPS"),
    ({"learning_rate_multiplier": 1e6}, "over the limit of 100"),
    ({"lora_dropout": 0.99}, "over the limit"),
    ({"warmup_steps": -5}, "must be >= 0"),
])
def test_out_of_bounds_values_are_refused_naming_the_limit(requested, match):
    with pytest.raises(InvalidInput, match=match):
        bounded(requested, n_examples=100_000 if "batch_size" in requested else 100)


def test_validation_and_early_stopping_reach_the_training_config():
    from training.jobs.hyperparameters import train_config_fields

    resolved = bounded({"validate_every": 5, "early_stopping_patience": 3,
                        "early_stopping_min_delta": 0.01})
    fields = train_config_fields(resolved)
    assert (fields["validate_every"], fields["early_stopping_patience"],
            fields["early_stopping_min_delta"]) == (5, 3, 0.01)


@pytest.mark.parametrize("requested,match", [
    ({"early_stopping_patience": "3"}, "early_stopping_patience='3' has the wrong type"),
    ({"validate_every": 1.5}, "validate_every=1.5 has the wrong type; expected int"),
    ({"early_stopping_min_delta": True}, "early_stopping_min_delta=True has the wrong type"),
    ({"early_stopping_patience": -1}, "early_stopping_patience=-1 must be >= 0"),
    ({"early_stopping_min_delta": 50}, "over the limit of 10"),
])
def test_bad_validation_settings_are_refused(requested, match):
    with pytest.raises(InvalidInput, match=match) as caught:
        bounded(requested)
    assert caught.value.status == 400
    assert caught.value.param == f"hyperparameters.{next(iter(requested))}"
