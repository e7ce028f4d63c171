"""The LoRA fine-tuning recipe: setup -> train -> evaluate -> save, in that order, once.

Entry points:

- :func:`run_training` (``TrainConfig`` -> ``TrainResult``), in-process; connects to the running
  Ray (``ray.init()`` if none: ``RAY_ADDRESS`` or a local Ray).
- ``python -m training.recipe --config config.json``: the same, as a job runner's entrypoint.

Setup validates and tokenizes the data on the driver. Training runs in Ray Train workers
(``TorchTrainer``, gloo on CPU / nccl on GPU, DDP when more than one): PEFT LoRA on the base model
or warm-started from a parent adapter, loss on assistant tokens only, optional packing,
gradient accumulation, a checkpoint every ``checkpoint_every`` steps; a failed worker restarts
the group from the latest checkpoint (``FailureConfig``), and the deterministic schedule
(:mod:`training.schedule`) plus per-step seeding make the resumed run match an uninterrupted
one. The workers score ``valid_loss`` on the held-out split as they go
(:mod:`training.early_stopping`: every ``validate_every`` steps or epoch, with early stopping
after ``early_stopping_patience`` validations without improvement, when the final checkpoint
holds the weights of the best validation). Evaluation runs on the driver against the held-out split,
for the adapter and the base. Save writes ``<output_dir>/adapter`` (``adapter_config.json`` +
``adapter_model.safetensors``) and ``<output_dir>/metrics.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from services.store.models import AdapterTask
from training import progress
from training.config import TrainConfig
from training.datasets import ChatExample, ValidationReport, validate_dataset
from training.early_stopping import (
    ValidationState,
    is_validation_step,
    record_validation,
    should_stop,
)
from training.errors import TrainingFailed
from training.evaluation import hash_split
from training.loss import batch_loss_sum
from training.packing import batches, build_row, collate_packed, collate_padded, truncate
from training.schedule import plan_steps
from training.tokenize import TokenizedExample, tokenize_example

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STATE_FILE = "trainer_state.pt"
BEST_FILE = "best_adapter_model.safetensors"
"""In a checkpoint: the LoRA weights of the best validation when they are not the adapter's."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    adapter_dir: Path
    metrics_path: Path
    metrics: dict[str, Any]
    checkpoint_path: str | None


# ---------------------------------------------------------------------------------- setup


def _dataset_bytes(path: str | None, inline: list[dict] | None, task: str) -> tuple[bytes, str]:
    if path is not None:
        return Path(path).read_bytes(), Path(path).name
    if task == AdapterTask.CLASSIFICATION:
        inline = [{"text": r["text"], "label": r["label"]} for r in inline or []]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in inline or []).encode(), "inline"


def load_datasets(config: TrainConfig) -> tuple[ValidationReport, ValidationReport | None, str]:
    """(train report, eval report or None, eval source). Raises DatasetError on any issue."""
    data, name = _dataset_bytes(config.train_file, config.train_examples, config.task)
    kwargs: dict[str, Any] = {}
    if config.task == AdapterTask.CLASSIFICATION:
        kwargs = {"filename": name, "labels": config.labels, "template": config.prompt_template}
    train = validate_dataset(data, config.task, **kwargs).raise_for_issues(f"training file {name}")
    if config.task == AdapterTask.CLASSIFICATION:
        kwargs["labels"] = train.labels
    if config.eval_file is not None or config.eval_examples:
        data, name = _dataset_bytes(config.eval_file, config.eval_examples, config.task)
        if config.task == AdapterTask.CLASSIFICATION:
            kwargs["filename"] = name
        evaluation = validate_dataset(data, config.task, **kwargs).raise_for_issues(
            f"validation file {name}")
        return train, evaluation, "file"
    return train, None, "hash_split" if config.eval_fraction > 0 else "none"


def _example_key(example: Any) -> str:
    if isinstance(example, ChatExample):
        return json.dumps(example.messages, sort_keys=True, ensure_ascii=False)
    return example.text


def split_examples(config: TrainConfig, train: ValidationReport, evaluation: ValidationReport | None
                   ) -> tuple[list, list]:
    """Training and held-out examples: the eval file's, or a stable hash split of training."""
    if evaluation is not None:
        return list(train.examples), list(evaluation.examples)
    if config.eval_fraction == 0:
        return list(train.examples), []
    return hash_split(train.examples, _example_key, config.eval_fraction)


def _tokenize_all(tokenizer: Any, examples: list, config: TrainConfig, labels: list[str]
                  ) -> list[TokenizedExample]:
    out = []
    for example in examples:
        tokenized = tokenize_example(tokenizer, example, template=config.prompt_template,
                                     labels=labels)
        out.append(truncate(tokenized, config.max_length))
    return [e for e in out if e.num_target_tokens > 0]


# ---------------------------------------------------------------------------------- train


def _build_model(config: TrainConfig, device: torch.device) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if config.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
        kwargs["device_map"] = {"": device}
    # Any: the base model, then the PeftModel wrapping it.
    model: Any = AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
    if config.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.parent_adapter:
        model = PeftModel.from_pretrained(model, config.parent_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=config.target_modules, task_type="CAUSAL_LM"))
    return model


def _unit_rows(unit_batch: list[list[int]], examples: list[TokenizedExample], packing: bool,
               pad_id: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    if packing:
        return collate_packed([build_row([examples[i] for i in u]) for u in unit_batch], pad_id,
                              dtype)
    return collate_padded([examples[u[0]] for u in unit_batch], pad_id)


def _lora_weights(model: Any) -> dict[str, torch.Tensor]:
    """A CPU copy of the adapter's trainable weights (PEFT's saved names)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(model).items()}


def _save_state(directory: str, model: Any, optimizer: Any, scheduler: Any, step: int,
                validation: ValidationState, best: dict[str, torch.Tensor] | None) -> None:
    """A resumable checkpoint; ``best``: the best validation's weights, when not the model's."""
    from safetensors.torch import save_file

    model.save_pretrained(directory)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "validation": validation.to_dict()},
               os.path.join(directory, STATE_FILE))
    if best is not None:
        save_file(best, os.path.join(directory, BEST_FILE))


def _load_state(directory: str, model: Any, optimizer: Any, scheduler: Any, *,
                early_stopping: bool = False
                ) -> tuple[int, ValidationState, dict[str, torch.Tensor] | None]:
    """(step, validations so far, best validation's weights) of a checkpoint, loaded into
    ``model``, ``optimizer`` and ``scheduler``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(os.path.join(directory, ADAPTER_FILES[1])))
    state = torch.load(os.path.join(directory, STATE_FILE), weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    validation = ValidationState.from_dict(state.get("validation") or {})
    best = None
    if os.path.exists(os.path.join(directory, BEST_FILE)):
        best = load_file(os.path.join(directory, BEST_FILE))
    elif validation.best_step is not None and early_stopping:  # its own weights are the best
        best = _lora_weights(model)
    return int(state["step"]), validation, best


@torch.no_grad()
def _validation_sums(model: Any, examples: list[TokenizedExample], batch_size: int, pad_id: int,
                     autocast: Any) -> tuple[float, int]:
    """(summed assistant-token loss, target tokens) of ``model`` on ``examples``, in eval mode
    (no dropout); the model is back in train mode after."""
    model.eval()
    total, count = 0.0, 0
    try:
        for chunk in batches(examples, batch_size):
            with autocast:
                s, n = batch_loss_sum(model, collate_padded(chunk, pad_id))
            total, count = total + float(s), count + n
    finally:
        model.train()
    return total, count


def on_this_machine(config: TrainConfig) -> TrainConfig:
    """``config`` with this machine's copy of the base model: a Ray worker on another node than
    the driver has it under its own TUNELOOP_BASE_MODEL (or imports the default model), checked
    against ``base_fingerprint`` (no fingerprint: the path is used as given)."""
    if config.base_fingerprint is None:
        return config
    from services.base_model import resolve_base_model
    from services.settings import Settings

    settings = Settings()
    path = Path(config.base_model)
    if not (path / "config.json").is_file():
        path = settings.resolved_base_model
    path = resolve_base_model(path, config.base_fingerprint,
                              default_dir=settings.default_base_model_dir)
    return replace(config, base_model=str(path))


def _parent_files(config: TrainConfig) -> dict[str, bytes] | None:
    """The warm-start adapter's files, shipped to the workers with their examples (a worker on
    another node than the driver cannot read the driver's copy)."""
    if not config.parent_adapter:
        return None
    return {name: (Path(config.parent_adapter) / name).read_bytes() for name in ADAPTER_FILES}


def _with_parent_here(config: TrainConfig, files: dict[str, bytes] | None) -> TrainConfig:
    """``config`` with a parent adapter directory this worker can read."""
    if not files or (config.parent_adapter and Path(config.parent_adapter).is_dir()):
        return config
    directory = Path(tempfile.mkdtemp(prefix="tuneloop-parent-"))
    for name, data in files.items():
        (directory / Path(name).name).write_bytes(data)
    return replace(config, parent_adapter=str(directory))


def train_worker(payload: dict[str, Any]) -> None:
    """Ray Train worker loop (one per worker). Reports metrics every step, checkpoints on rank 0."""
    import ray.train
    import ray.train.torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local model dirs only, never a hub
    config = on_this_machine(TrainConfig.from_dict(payload["config"]))
    config = _with_parent_here(config, payload.get("parent_files"))
    examples = [TokenizedExample(ids, labels) for ids, labels in payload["examples"]]
    pad_id = payload["pad_id"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    valid_all = [TokenizedExample(ids, labels) for ids, labels in payload["valid_examples"]]
    valid_mine = valid_all[rank::world]  # every rank scores its share; the sums are all-reduced
    threads = torch_threads(worker_cpus() or config.cpus_per_worker)
    torch.set_num_threads(threads)  # intra-op parallelism over the CPUs Ray reserved for us
    torch.manual_seed(config.seed)  # LoRA init: identical on every rank and every attempt
    device = ray.train.torch.get_device()
    model: Any = _build_model(config, device)  # then DDP-wrapped (or moved) below
    peft_model = model
    model = ray.train.torch.prepare_model(model) if not config.qlora else model.to(device)
    compute_dtype = torch.bfloat16 if config.use_gpu else torch.float32
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.use_gpu
                else contextlib.nullcontext())

    plan = plan_steps([len(e.input_ids) for e in examples], epochs=config.epochs,
                      batch_size=config.batch_size, grad_accum=config.grad_accum,
                      packing=config.packing, max_length=config.max_length, seed=config.seed,
                      world_size=world, rank=rank)
    steps_per_epoch = len(plan) // config.epochs  # every epoch has as many steps
    steps = plan[: config.max_steps]
    total = len(steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    warmup = config.warmup_steps

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def valid_loss() -> float:
        sums = torch.tensor(_validation_sums(peft_model, valid_mine, config.batch_size, pad_id,
                                             autocast), dtype=torch.float64)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(sums)  # every rank gets the same loss, so makes the same stop call
        return float(sums[0]) / max(float(sums[1]), 1.0)

    patience = config.early_stopping_patience
    start = 0
    validation = ValidationState()
    best: dict[str, torch.Tensor] | None = None  # the best validation's weights (CPU copy)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            start, validation, best = _load_state(directory, peft_model, optimizer, scheduler,
                                                  early_stopping=bool(patience))
        if rank == 0:
            progress.emit(config.progress_file, "resumed", step=start, total_steps=total)
    elif rank == 0:
        progress.emit(config.progress_file, "training_started", total_steps=total,
                      num_workers=world, examples=len(examples),
                      cpus_per_worker=config.cpus_per_worker, torch_threads=threads)

    model.train()
    for step in range(start, total):
        if should_stop(validation, patience):
            break  # stopped early at the previous step (or at the checkpoint resumed from)
        # Dropout depends only on (seed, step, rank): a resumed step replays exactly.
        torch.manual_seed(config.seed * 1_000_003 + step * 101 + rank)
        began = time.perf_counter()
        micro_batches = steps[step]
        collated = [_unit_rows(mb, examples, config.packing, pad_id, compute_dtype)
                    for mb in micro_batches]
        window_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in collated)
        loss_sum, real_tokens = 0.0, 0
        for i, batch in enumerate(collated):
            last = i == len(collated) - 1
            sync = model.no_sync() if world > 1 and not last else contextlib.nullcontext()
            with sync, autocast:
                s, _ = batch_loss_sum(model, batch)
                (s / max(window_tokens, 1)).backward()
            loss_sum += float(s)
            real_tokens += _real_tokens(micro_batches[i], examples)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - began
        totals = torch.tensor([loss_sum, window_tokens, real_tokens, elapsed], dtype=torch.float64)
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(totals)  # sums; elapsed becomes the sum over ranks
            totals[3] /= world
        done = step + 1
        metrics: dict[str, Any] = {
            "step": done, "total_steps": total, "epoch": done * config.epochs / total,
            "loss": float(totals[0]) / max(float(totals[1]), 1.0), "tokens": int(totals[2]),
            "tokens_per_s": float(totals[2]) / max(float(totals[3]), 1e-9),
            "learning_rate": scheduler.get_last_lr()[0],
        }
        stopping = False
        if valid_all and is_validation_step(done, total, config.validate_every, steps_per_epoch):
            metrics["valid_loss"] = loss = valid_loss()
            validation = record_validation(validation, done, loss,
                                           config.early_stopping_min_delta)
            if validation.best_step == done and patience:  # kept only to be published
                best = _lora_weights(peft_model)
            stopping = done < total and should_stop(validation, patience)
        final = done == total or stopping
        if final and validation.validations:
            metrics.update(best_step=validation.best_step, best_valid_loss=validation.best_loss,
                           early_stopped=stopping, validations=validation.validations)
        want_checkpoint = final or (config.checkpoint_every and
                                    done % config.checkpoint_every == 0)
        if rank == 0:
            progress.emit(config.progress_file, "step", **metrics)
            if stopping:
                progress.emit(config.progress_file, "early_stopped", step=done,
                              best_step=validation.best_step,
                              best_valid_loss=validation.best_loss, patience=patience)
            marker = Path(config.output_dir) / ".crash-injected"
            if config.crash_at_step == done and not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()  # exactly one injected crash per run
                os._exit(1)  # testing only: die like an OOM-killed worker, before the checkpoint
        if want_checkpoint:
            if final and best is not None:
                from peft import set_peft_model_state_dict

                # With early stopping the run's adapter is its best one; without, its last.
                set_peft_model_state_dict(peft_model, best)
            at_best = final or validation.best_step == done
            with tempfile.TemporaryDirectory() as directory:
                saved = None
                if rank == 0:
                    _save_state(directory, peft_model, optimizer, scheduler, done, validation,
                                None if at_best else best)
                    saved = ray.train.Checkpoint.from_directory(directory)
                name = f"checkpoint-{done:06d}"
                ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=name)
            if rank == 0:
                path = f"{config.resolved_storage_path.rstrip('/')}/{config.run_name}/{name}"
                progress.emit(config.progress_file, "checkpoint", step=done, path=path,
                              loss=metrics["loss"])
        elif done % config.log_every == 0 or "valid_loss" in metrics:
            ray.train.report(metrics)


def _real_tokens(micro_batch: list[list[int]], examples: list[TokenizedExample]) -> int:
    return sum(len(examples[i].input_ids) for unit in micro_batch for i in unit)


def auto_cpus_per_worker(node_cpus: list[float], num_workers: int) -> float:
    """Pure: CPUs per worker when none are configured: the cluster's CPUs shared by
    ``num_workers``, at most the largest node's (a worker runs on one node), at least 1."""
    share = sum(node_cpus) // max(1, num_workers)
    return float(max(1.0, min(max(node_cpus, default=1.0), share)))


def worker_cpus() -> float | None:
    """The CPUs Ray assigned to the calling worker or task (None outside Ray, or none)."""
    import ray

    if not ray.is_initialized():
        return None
    context = ray.get_runtime_context()
    if context.worker.mode != ray.WORKER_MODE:  # a driver: Ray reserves nothing for it
        return None
    return context.get_assigned_resources().get("CPU") or None


def torch_threads(cpus: float | None) -> int:
    """Torch intra-op threads for ``cpus`` CPUs (None: every core this process may use)."""
    if cpus is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            os.cpu_count() or 1
    return max(1, int(cpus))


def ray_storage(location: str) -> tuple[str, Any]:
    """Ray Train's (storage_path, storage_filesystem) for a local dir or an fsspec URL: an
    object store goes through the same fsspec filesystem (and credentials) as the artifacts."""
    if "://" not in location:
        return location, None
    import fsspec
    import pyarrow.fs

    fs, path = fsspec.core.url_to_fs(location)
    if "file" in fs.protocol or "local" in fs.protocol:
        return path, None
    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def train(config: TrainConfig, examples: list[TokenizedExample], pad_id: int,
          valid_examples: list[TokenizedExample] | None = None) -> Any:
    """Run the Ray Train job (``valid_examples``: scored for ``valid_loss``; none, no early
    stopping); returns ray.train.Result (raises TrainingFailed on failure)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False)
    if config.cpus_per_worker is None:
        nodes = [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
        config = replace(config, cpus_per_worker=auto_cpus_per_worker(nodes, config.num_workers))
    storage_path, filesystem = ray_storage(config.resolved_storage_path)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config.to_dict(), "pad_id": pad_id,
                           "parent_files": _parent_files(config),
                           "examples": [(e.input_ids, e.labels) for e in examples],
                           "valid_examples": [(e.input_ids, e.labels)
                                              for e in valid_examples or []]},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.num_workers, use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker}),
        run_config=RunConfig(
            name=config.run_name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; say what failed
        raise TrainingFailed(f"training run {config.run_name} failed: {exc}") from exc
    if result.checkpoint is None:
        raise TrainingFailed(f"training run {config.run_name} ended without a checkpoint")
    return result


# ---------------------------------------------------------------------------------- evaluate


def evaluate(config: TrainConfig, adapter_dir: Path, eval_examples: list, labels: list[str],
             tokenizer: Any) -> dict[str, Any]:
    """Metrics of the adapter (and of the base, adapter disabled) on the held-out examples; a
    chat adapter's also keep its first replies as ``samples``."""
    from training import scoring
    from training.evaluation import MAX_SAMPLES

    examples = eval_examples[: config.eval_max_examples]
    if not examples:
        return {}
    model, _ = scoring.load_model(config.base_model, adapter_dir)
    torch.set_num_threads(torch_threads(config.cpus_per_worker))

    def measure(samples: int) -> dict[str, Any]:
        if config.task == AdapterTask.CLASSIFICATION:
            return scoring.evaluate_classifier(model, tokenizer, config.prompt_template,
                                               examples, labels)
        return scoring.evaluate_chat(model, tokenizer, examples, max_length=config.max_length,
                                     max_new_tokens=config.max_new_tokens, samples=samples)

    results = {"adapter": measure(MAX_SAMPLES)}
    if config.compare_base:
        with model.disable_adapter():
            results["base"] = measure(0)
    return results


# ---------------------------------------------------------------------------------- save


def _base_fingerprint(base_model: str) -> Any:
    path = Path(base_model) / "tuneloop-fingerprint.json"
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def save_adapter(checkpoint_dir: str, output_dir: Path) -> Path:
    """Copy the PEFT adapter files out of a checkpoint directory into ``output_dir/adapter``."""
    adapter_dir = output_dir / "adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(Path(checkpoint_dir) / name, adapter_dir / name)
    return adapter_dir


def validation_summary(train_metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The validations of a run from its final step's metrics (None when nothing was scored)."""
    if not train_metrics.get("validations"):
        return None
    return {"best_step": train_metrics["best_step"],
            "best_valid_loss": train_metrics["best_valid_loss"],
            "early_stopped": bool(train_metrics.get("early_stopped")),
            "stopped_at_step": train_metrics.get("step"),
            "validations": train_metrics["validations"]}


def run_training(config: TrainConfig) -> TrainResult:
    """Setup -> train -> evaluate -> save. Raises DatasetError, TrainConfigError, TrainingFailed."""
    from transformers import AutoTokenizer

    began = time.time()
    config = on_this_machine(config)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def emit(event: str, **fields: Any) -> None:
        progress.emit(config.progress_file, event, **fields)

    emit("started", run_name=config.run_name)
    try:
        # setup
        train_report, eval_report, eval_source = load_datasets(config)
        labels = train_report.labels if config.task == AdapterTask.CLASSIFICATION else []
        train_examples, eval_examples = split_examples(config, train_report, eval_report)
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        tokenized = _tokenize_all(tokenizer, train_examples, config, labels)
        if not tokenized:
            raise TrainingFailed("no training examples left after the held-out split; add "
                                 "examples or lower eval_fraction")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else tokenizer.eos_token_id
        valid = _tokenize_all(tokenizer, eval_examples[: config.valid_max_examples], config,
                              labels)
        reports = [r for r in (train_report, eval_report) if r is not None]
        emit("validated", train_examples=len(tokenized), eval_examples=len(eval_examples),
             eval_source=eval_source, labels=labels, valid_examples=len(valid),
             duplicates_dropped=sum(r.stats.duplicates for r in reports),
             conflicting_labels_dropped=sum(r.stats.conflicting_labels for r in reports))
        # train
        result = train(config, tokenized, pad_id, valid)
        train_metrics = dict(result.metrics or {})
        with result.checkpoint.as_directory() as checkpoint_dir:
            adapter_dir = save_adapter(checkpoint_dir, output_dir)
        # evaluate
        eval_metrics = {}
        if config.evaluate and eval_examples:
            eval_metrics = evaluate(config, adapter_dir, eval_examples, labels, tokenizer)
            emit("evaluated", **eval_metrics)
        # save
        metrics = {
            "run_name": config.run_name, "task": config.task, "labels": labels,
            "prompt_template": config.prompt_template if config.task == AdapterTask.CLASSIFICATION else None,
            "base_model": config.base_model, "base_fingerprint": _base_fingerprint(config.base_model),
            "parent_adapter": config.parent_adapter, "hyperparameters": config.hyperparameters(),
            "datasets": {
                "train": train_report.stats.to_dict(),
                "eval": eval_report.stats.to_dict() if eval_report else None,
                "eval_source": eval_source, "train_examples": len(tokenized),
                "eval_examples": len(eval_examples),
            },
            "train": train_metrics, "validation": validation_summary(train_metrics),
            "eval": eval_metrics,
            "checkpoint": result.checkpoint.path, "wall_time_s": time.time() - began,
        }
        metrics_path = output_dir / "metrics.json"
        metrics_path.write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
        emit("saved", adapter_dir=str(adapter_dir), metrics_path=str(metrics_path))
        emit("succeeded", adapter_dir=str(adapter_dir))
        return TrainResult(adapter_dir, metrics_path, metrics, result.checkpoint.path)
    except Exception as exc:
        emit("failed", reason=str(exc), error=type(exc).__name__)
        raise


def main(argv: list[str] | None = None) -> int:
    """``python -m training.recipe --config config.json``: exit 0 and print the adapter dir."""
    parser = argparse.ArgumentParser(description="Run one tuneloop LoRA training recipe.")
    parser.add_argument("--config", required=True, help="TrainConfig as JSON (TrainConfig.to_json)")
    args = parser.parse_args(argv)
    config = TrainConfig.from_json(args.config)
    try:
        result = run_training(config)
    except Exception as exc:  # noqa: BLE001 - the entrypoint reports any failure as exit 1
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"adapter_dir": str(result.adapter_dir),
                      "metrics_path": str(result.metrics_path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
