"""Request and response bodies of the files and fine-tuning routes (OpenAI shapes + extras)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FileOut(BaseModel):
    """OpenAI's file object; ``task``, ``format``, ``sha256`` and ``stats`` are tuneloop's."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str
    status_details: str | None = None
    expires_at: int | None = None
    task: str = Field(description="chat or classification (detected from the content; a "
                                  "result file: its job's task).")
    format: str = Field(description="jsonl or csv.")
    sha256: str = Field(description="Content hash: the file's key in the artifact store.")
    stats: dict[str, Any] = Field(description="examples, tokens, max_example_tokens, "
                                              "label_counts.")


class JobCreate(BaseModel):
    """``POST /v1/fine_tuning/jobs``. tuneloop extras: task, labels, prompt_template,
    auto_promote; extra LoRA keys go in ``hyperparameters``."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="The base model's name, or 'name' / 'name@vN' of one of your "
                                   "adapters to warm-start from.")
    training_file: str
    validation_file: str | None = None
    suffix: str | None = Field(default=None, description="The adapter name (default: the parent "
                                                         "adapter's name, else ft-<job>).")
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = Field(
        default=None, description="OpenAI's {'type': 'supervised', 'supervised': "
                                  "{'hyperparameters': {...}}}; only supervised is supported.")
    seed: int | None = Field(default=None, ge=0, lt=2**31)
    task: Literal["chat", "classification"] | None = Field(
        default=None, description="Default: the training file's format.")
    labels: list[str] | None = Field(default=None, description="Classification label set "
                                                               "(default: the file's labels).")
    prompt_template: str | None = None
    auto_promote: bool = Field(default=False, description="Make the new version the champion.")
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = None


class JobOut(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: dict[str, Any] | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = Field(default=[], description=(
        "A succeeded job's step metrics CSV (purpose fine-tune-results, GET "
        "/v1/files/{id}/content); the id stays after the file is deleted."))
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[Any] = []
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    suffix: str
    task: str
    labels: list[str] | None
    prompt_template: str | None
    auto_promote: bool
    cancel_requested: bool
    pause_requested: bool = False
    progress: dict[str, Any] = Field(description="step, total_steps, loss, tokens_per_s, eta_s.")


class EventOut(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str = Field(description="created, validated, queued, started, metrics, checkpoint, "
                                  "evaluated, gate_decision, parity_checked, parity_skipped, "
                                  "published, promoted, succeeded, failed, cancelled, message.")
    data: dict[str, Any] | None = None


class CheckpointOut(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


class Page(BaseModel):
    object: Literal["list"] = "list"
    data: list
    has_more: bool = False
