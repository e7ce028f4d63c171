"""Validation loss during training, early stopping and the best checkpoint.

- when a run validates and when it stops (pure bookkeeping), and the config that asks for it;
- a checkpoint carries the best validation and its weights, so a resumed run keeps them;
- a real Ray Train run on the default model stops early and publishes its best step's weights;
- a job shows the validation loss, the stop and the best step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.training.test_recipe import CHAT
from training.config import TrainConfig
from training.early_stopping import (
    ValidationState,
    is_validation_step,
    record_validation,
    should_stop,
)
from training.errors import TrainConfigError
from training.progress import ProgressReader, emit, read_events
from training.recipe import run_training, validation_summary


def test_validation_steps_every_n_steps_or_at_each_epoch_end_and_always_the_last():
    assert [d for d in range(1, 11) if is_validation_step(d, 10, 3, 5)] == [3, 6, 9, 10]
    assert [d for d in range(1, 11) if is_validation_step(d, 10, 0, 5)] == [5, 10]
    assert [d for d in range(1, 8) if is_validation_step(d, 7, 0, 10)] == [7]  # max_steps cut
    assert [d for d in range(1, 4) if is_validation_step(d, 3, 1, 3)] == [1, 2, 3]


def test_patience_counts_validations_that_do_not_beat_the_best_by_min_delta():
    state = ValidationState()
    for step, loss in enumerate([2.0, 1.5, 1.45, 1.6, 1.2, 1.3, 1.25], start=1):
        state = record_validation(state, step, loss, min_delta=0.1)
    # 1.45 is not 0.1 below 1.5; 1.2 is. Then two validations without improvement.
    assert state == ValidationState(best_loss=1.2, best_step=5, bad_validations=2, validations=7)
    assert should_stop(state, patience=2) and not should_stop(state, patience=3)
    assert not should_stop(state, patience=0)  # 0: early stopping off
    assert ValidationState.from_dict(state.to_dict()) == state


def test_first_validation_is_always_the_best_so_far():
    state = record_validation(ValidationState(), 4, 9.0, min_delta=1e9)
    assert (state.best_step, state.best_loss, state.bad_validations) == (4, 9.0, 0)
    assert record_validation(state, 5, 0.0, min_delta=1e9).bad_validations == 1


@pytest.mark.parametrize("field", ["validate_every", "early_stopping_patience",
                                   "early_stopping_min_delta", "valid_max_examples"])
def test_negative_validation_settings_are_refused_naming_the_field(tmp_path, field):
    value = 0 if field == "valid_max_examples" else -1
    with pytest.raises(TrainConfigError, match=f"{field}={value} must be >= "):
        TrainConfig(base_model=str(tmp_path), output_dir=str(tmp_path),
                    train_examples=[{"text": "a", "label": "x"}], **{field: value})


def test_validation_summary_comes_from_the_final_step_metrics():
    assert validation_summary({"step": 8, "loss": 1.0}) is None  # nothing was scored
    final = {"step": 3, "best_step": 1, "best_valid_loss": 0.5, "early_stopped": True,
             "validations": 3}
    assert validation_summary(final) == {"best_step": 1, "best_valid_loss": 0.5,
                                         "early_stopped": True, "stopped_at_step": 3,
                                         "validations": 3}


def _tiny_peft_model():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, vocab_size=100)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def test_a_checkpoint_keeps_the_best_validation_for_a_resumed_run(tmp_path):
    from training.recipe import BEST_FILE, _load_state, _lora_weights, _save_state

    model, optimizer, scheduler = _tiny_peft_model()
    best = _lora_weights(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)  # trained on after the best validation
    state = ValidationState(best_loss=0.7, best_step=2, bad_validations=1, validations=3)
    _save_state(str(tmp_path / "a"), model, optimizer, scheduler, 3, state, best)
    assert (tmp_path / "a" / BEST_FILE).exists()

    resumed, optimizer, scheduler = _tiny_peft_model()
    step, validation, loaded = _load_state(str(tmp_path / "a"), resumed, optimizer, scheduler,
                                           early_stopping=True)
    assert (step, validation) == (3, state)
    assert loaded.keys() == best.keys()
    assert all(torch.equal(loaded[k], best[k]) for k in best)
    current = _lora_weights(resumed)
    assert not all(torch.equal(current[k], best[k]) for k in best)  # the step-3 weights

    # At the best step itself no copy is written: the checkpoint's adapter is the best.
    _save_state(str(tmp_path / "b"), resumed, optimizer, scheduler, 2,
                ValidationState(0.7, 2, 0, 2), None)
    assert not (tmp_path / "b" / BEST_FILE).exists()
    again, optimizer, scheduler = _tiny_peft_model()
    _, _, loaded = _load_state(str(tmp_path / "b"), again, optimizer, scheduler,
                                early_stopping=True)
    assert all(torch.equal(loaded[k], current[k]) for k in current)
    # Without early stopping nothing is kept to be published: the run's last step is.
    assert _load_state(str(tmp_path / "b"), again, optimizer, scheduler)[2] is None


@pytest.mark.integration
@pytest.mark.ray
def test_a_run_stops_early_and_publishes_its_best_step(ray_cluster, base_model_dir, tmp_path):
    from safetensors.torch import load_file

    from training.recipe import ADAPTER_FILES, BEST_FILE

    progress_file = tmp_path / "progress.jsonl"
    # A min_delta no loss can beat: step 1 is the best, steps 2 and 3 exhaust patience 2.
    config = TrainConfig(
        base_model=str(base_model_dir), output_dir=str(tmp_path / "out"), task="chat",
        train_examples=CHAT[:4], eval_examples=CHAT[4:6], epochs=2, batch_size=1,
        learning_rate=1e-3, max_length=64, cpus_per_worker=1, checkpoint_every=1,
        validate_every=1, early_stopping_patience=2, early_stopping_min_delta=1e6,
        evaluate=False, progress_file=str(progress_file),
    )
    result = run_training(config)

    events = read_events(progress_file)
    assert next(e for e in events if e["event"] == "training_started")["total_steps"] == 8
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]  # of 8
    assert all(e["valid_loss"] > 0 for e in steps)
    stopped = [e for e in events if e["event"] == "early_stopped"]
    assert len(stopped) == 1 and stopped[0]["step"] == 3 and stopped[0]["best_step"] == 1
    assert stopped[0]["best_valid_loss"] == steps[0]["valid_loss"]

    validation = json.loads(result.metrics_path.read_text())["validation"]
    assert validation == {"best_step": 1, "best_valid_loss": steps[0]["valid_loss"],
                          "early_stopped": True, "stopped_at_step": 3, "validations": 3}
    assert validation["best_step"] < validation["stopped_at_step"]

    # Step 2's checkpoint holds its own weights and, beside them, step 1's (the best).
    step2 = Path(config.resolved_storage_path, config.run_name, "checkpoint-000002")
    published = load_file(result.adapter_dir / ADAPTER_FILES[1])
    best, later = load_file(step2 / BEST_FILE), load_file(step2 / ADAPTER_FILES[1])
    assert published.keys() == best.keys() == later.keys()
    assert all(torch.equal(published[k], best[k]) for k in best)
    assert not all(torch.equal(published[k], later[k]) for k in later)
    final = Path(result.checkpoint_path)
    assert final.name == "checkpoint-000003" and not (final / BEST_FILE).exists()


def test_a_job_shows_validation_loss_the_stop_and_the_best_step(platform, tmp_path):
    from services.tenants import create_tenant
    from tests.support.api import chat_lines
    from training.jobs import store
    from training.jobs.execute import RunFollower
    from training.jobs.files import store_file
    from training.jobs.intake import JobRequest, create_job

    with platform.store.write() as session:
        tenant = create_tenant(session, "acme")
    file = store_file(platform, tenant, chat_lines(8), "train.jsonl")
    job = create_job(platform, tenant, JobRequest(model="base", training_file=file.id,
                     hyperparameters={"validate_every": 1, "early_stopping_patience": 1}))
    assert job.hyperparameters["early_stopping_patience"] == 1

    target = tmp_path / "progress.jsonl"
    step = {"total_steps": 4, "epoch": 0.5, "tokens": 10, "tokens_per_s": 5.0,
            "learning_rate": 1e-4}
    emit(target, "step", step=1, loss=2.0, valid_loss=1.5, **step)
    emit(target, "step", step=2, loss=1.8, valid_loss=1.7, best_step=1, best_valid_loss=1.5,
         early_stopped=True, validations=2, **step)
    emit(target, "early_stopped", step=2, best_step=1, best_valid_loss=1.5, patience=1)
    follower = RunFollower(job.id, ProgressReader(target))
    with platform.store.write() as session:
        follower.poll(session)
        rows, _ = store.list_events(session, job.id, limit=100, oldest_first=True)
    metrics = [e for e in rows if e.type == "metrics"]
    assert metrics[0].data["valid_loss"] == 1.5
    assert "validation loss=1.7000" in metrics[1].message
    note = next(e for e in rows if e.data and e.data.get("early_stopped"))
    assert note.type == "message" and "from step 1" in note.message
    assert note.data["best_valid_loss"] == 1.5
    assert {k: follower.snapshot[k] for k in ("valid_loss", "best_step", "best_valid_loss",
                                              "early_stopped")} == {
        "valid_loss": 1.7, "best_step": 1, "best_valid_loss": 1.5, "early_stopped": True}
