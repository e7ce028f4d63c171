"""TrainConfig: everything one training run needs, validated when built, JSON round-trippable.

The Jobs API builds one from the job's hyperparameters and settings, writes it with
:meth:`TrainConfig.to_json` and runs ``python -m training.recipe --config <file>`` through a
job runner (or calls :func:`training.recipe.run_training` in-process).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE, validate_template
from services.store.models import AdapterTask
from training.errors import TrainConfigError


def new_run_name(prefix: str = "tuneloop") -> str:
    """A run name no other run has: reusing a name with the same storage path resumes that run."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass
class TrainConfig:
    """One LoRA fine-tuning run. Paths are local directories or files."""

    base_model: str
    """Hugging Face model directory of the base model."""
    output_dir: str
    """Where the adapter (``adapter/``) and ``metrics.json`` are written."""
    task: AdapterTask = AdapterTask.CHAT
    """``chat`` (OpenAI messages JSONL) or ``classification`` (text, label)."""
    train_file: str | None = None
    """Training dataset file; or give ``train_examples``."""
    train_examples: list[dict[str, Any]] | None = None
    """Training examples inline: ``{"messages": [...]}`` or ``{"text", "label"}`` dicts."""
    eval_file: str | None = None
    """Held-out dataset file; without it (and without ``eval_examples``) a stable hash split of
    the training data is held out (``eval_fraction``)."""
    eval_examples: list[dict[str, Any]] | None = None
    """Held-out examples inline."""
    eval_fraction: float = 0.1
    """Share of training examples held out by hash when no eval set is given (0 = none)."""
    labels: list[str] | None = None
    """Classification label set, in order. Default: the sorted labels of the training data."""
    prompt_template: str = DEFAULT_CLASSIFICATION_TEMPLATE
    """Classification prompt (``{text}``, ``{labels}``), shared with serving."""
    parent_adapter: str | None = None
    """PEFT adapter directory to warm-start from (its LoRA shape is kept)."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] | str = "all-linear"
    """Modules that get LoRA: a list of names, or ``all-linear`` (every linear but the head)."""
    epochs: int = 1
    """Passes over the training data."""
    batch_size: int = 8
    """Examples (or packed rows) per micro-batch, per worker."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 2e-4
    """Peak AdamW learning rate (linear decay to 0 after ``warmup_steps``)."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_length: int = 512
    """Longest example in tokens (longer ones are truncated) and the packed row length."""
    packing: bool = False
    """Pack short examples into rows of ``max_length`` (no attention across examples)."""
    seed: int = 0
    """Seed for LoRA init, dropout and data order: same seed, same data -> same adapter."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (benchmarks, smoke tests)."""
    num_workers: int = 1
    """Ray Train workers (data parallel; gloo on CPU, nccl on GPU)."""
    use_gpu: bool = False
    """One GPU per worker."""
    cpus_per_worker: float | None = None
    """CPUs reserved per worker; its torch threads are the CPUs Ray gave it (rounded down).
    None: the Ray cluster's CPUs shared by the workers, at most a node's (every core of this
    machine with one worker on the embedded Ray)."""
    qlora: bool = False
    """Load the base in 4-bit (bitsandbytes NF4) and train LoRA on top; GPU only, and untested:
    tuneloop's CI has no GPU, so this path has never run (CPU requests are refused)."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every N optimizer steps (0: only at the end)."""
    validate_every: int = 0
    """Score the held-out split (``valid_loss``) every N optimizer steps; 0: at the end of every
    epoch. The last step always validates (without held-out examples nothing is scored)."""
    valid_max_examples: int = 64
    """Score ``valid_loss`` on at most this many held-out examples (bounds its cost)."""
    early_stopping_patience: int = 0
    """Stop when ``valid_loss`` has not improved for this many validations in a row (0: never).
    With early stopping on, the adapter saved is the one from the step with the best
    ``valid_loss`` (stopped early or not); without it, the last step's."""
    early_stopping_min_delta: float = 0.0
    """How much lower than the best ``valid_loss`` a validation must be to count as improved."""
    max_failures: int = 2
    """Worker failures tolerated; each restarts the workers from the latest checkpoint."""
    storage_path: str | None = None
    """Ray Train storage for checkpoints (local dir or fsspec URL). Default: output_dir/ray."""
    run_name: str = field(default_factory=new_run_name)
    """Unique per job: the same name and storage path resume that run from its latest
    checkpoint (how a restarted tuneloop resumes a job: run the same config again)."""
    progress_file: str | None = None
    """JSON-lines file the run appends progress events to (step, loss, tokens/s, ...)."""
    log_every: int = 1
    """Report step metrics every N optimizer steps."""
    evaluate: bool = True
    """Evaluate the adapter on the held-out split after training."""
    compare_base: bool = True
    """Also evaluate the base model (adapter disabled) on the same split."""
    eval_max_examples: int = 200
    """Evaluate on at most this many held-out examples."""
    max_new_tokens: int = 64
    """Generation length for chat exact match / ROUGE-L."""
    base_fingerprint: str | None = None
    """The base model's fingerprint. When set, a machine where ``base_model`` is missing (a Ray
    worker on another node) uses its own copy (its TUNELOOP_BASE_MODEL or the default model),
    and every machine checks that its copy is this model."""
    crash_at_step: int | None = None
    """Testing only: worker rank 0 exits abruptly once, right after finishing this step (before
    its checkpoint), as if killed; the run must restart from its latest checkpoint and finish."""

    def __post_init__(self) -> None:
        # Ray workers run in another working directory: keep every local path absolute.
        for name in ("base_model", "output_dir", "train_file", "eval_file", "parent_adapter",
                     "progress_file", "storage_path"):
            value = getattr(self, name)
            if value is not None and "://" not in str(value):
                setattr(self, name, str(Path(value).expanduser().resolve()))
        problems = []
        # NaN passes every "<= 0" check and Infinity every lower bound: refuse both first.
        problems += [f"{f.name}={getattr(self, f.name)} must be a finite number"
                     for f in fields(self) if isinstance(getattr(self, f.name), float)
                     and not math.isfinite(getattr(self, f.name))]
        if self.task not in tuple(AdapterTask):
            problems.append(f"task={self.task!r}: use 'chat' or 'classification'")
        if self.train_file is None and not self.train_examples:
            problems.append("give train_file or train_examples")
        if self.train_file is not None and self.train_examples:
            problems.append("give train_file or train_examples, not both")
        if self.eval_file is not None and self.eval_examples:
            problems.append("give eval_file or eval_examples, not both")
        for name in ("lora_r", "lora_alpha", "epochs", "batch_size", "grad_accum", "num_workers",
                     "log_every", "eval_max_examples", "max_new_tokens", "valid_max_examples"):
            if getattr(self, name) < 1:
                problems.append(f"{name}={getattr(self, name)} must be >= 1")
        if self.max_length < 16:
            problems.append(f"max_length={self.max_length} must be >= 16")
        if not 0.0 <= self.lora_dropout < 1.0:
            problems.append(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
        if not 0.0 <= self.eval_fraction < 1.0:
            problems.append(f"eval_fraction={self.eval_fraction} must be in [0, 1)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate={self.learning_rate} must be > 0")
        for name in ("checkpoint_every", "warmup_steps", "max_failures", "validate_every",
                     "early_stopping_patience", "early_stopping_min_delta"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)} must be >= 0")
        if self.max_steps is not None and self.max_steps < 1:
            problems.append(f"max_steps={self.max_steps} must be >= 1 (or None)")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            problems.append(f"cpus_per_worker={self.cpus_per_worker} must be > 0")
        if self.qlora and not self.use_gpu:
            problems.append("qlora=true needs use_gpu=true: 4-bit bitsandbytes kernels run on "
                            "CUDA only; set qlora=false to train LoRA in full precision on CPU")
        if self.labels is not None and len(set(self.labels)) < 2:
            problems.append(f"labels={self.labels} must name at least two distinct labels")
        if self.task == AdapterTask.CLASSIFICATION:
            try:
                validate_template(self.prompt_template)
            except ValueError as exc:
                problems.append(str(exc))
        if not self.run_name or "/" in self.run_name:
            problems.append(f"run_name={self.run_name!r} must be non-empty without '/'")
        if problems:
            raise TrainConfigError("invalid training config: " + "; ".join(problems))

    @property
    def resolved_storage_path(self) -> str:
        return self.storage_path or str(Path(self.output_dir).resolve() / "ray")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainConfigError(f"unknown training config field(s) {unknown}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def hyperparameters(self) -> dict[str, Any]:
        """The fields that shape the adapter (stored with the version as lineage)."""
        keys = ("task", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "epochs",
                "batch_size", "grad_accum", "learning_rate", "warmup_steps", "weight_decay",
                "max_length", "packing", "seed", "max_steps", "num_workers", "qlora",
                "validate_every", "early_stopping_patience", "early_stopping_min_delta")
        return {k: getattr(self, k) for k in keys}
