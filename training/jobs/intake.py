"""Creating a job: check the model, files, name and hyperparameters, then queue it.

Everything a caller can get wrong is refused here with a 4xx that names the field, so a job that
is created can only fail for reasons found while validating files or training.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services import registry
from services.errors import InvalidInput, NotFound, RateLimited
from services.names import NameKind, check_name
from services.platform import Platform
from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
from services.quotas import check_adapter_quota
from services.settings import Settings
from services.store.models import (
    Adapter,
    AdapterTask,
    DatasetFile,
    FineTuningJob,
    JobStatus,
    Tenant,
)
from training.config import TrainConfig
from training.errors import TrainConfigError
from training.jobs import store
from training.jobs.files import PURPOSES, get_file
from training.jobs.hyperparameters import check_bounds, resolve_hyperparameters, train_config_fields
from training.jobs.states import EventType

"""Jobs validating, queued or running at once (all tenants) before creation answers 429."""


def _file(session: Session, tenant: Tenant, file_id: str | None, param: str) -> DatasetFile:
    try:
        row = get_file(session, tenant, file_id, param=param)
    except NotFound as exc:
        raise InvalidInput(f"{param} {file_id!r} is not one of your files; upload it with "
                           "POST /v1/files (purpose fine-tune) and pass its id",
                           param=param, code=f"invalid_{param}") from exc
    if row.purpose not in PURPOSES:  # a job's result file
        raise InvalidInput(f"{param} {row.id} has purpose {row.purpose!r}, not a dataset; "
                           "upload one with POST /v1/files (purpose fine-tune) and pass its id",
                           param=param, code=f"invalid_{param}")
    return row


def _parent(session: Session, tenant: Tenant, model: str) -> registry.ResolvedAdapter:
    try:
        return registry.resolve(session, tenant, model)
    except NotFound as exc:
        raise InvalidInput(
            f"model {model!r} is neither the base model nor a servable adapter of yours; use the "
            "base model's name (GET /v1/models) or 'name' / 'name@vN' of one of your adapters",
            param="model", code="model_not_found") from exc


@dataclass(frozen=True)
class JobRequest:
    """What a client asks for (the OpenAI fine-tuning job fields plus tuneloop's)."""

    model: str
    """The base model's name, or ``name`` / ``name@vN`` of an adapter to warm-start from."""
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    """The adapter's name (default: the parent's name, else ``ft-<job>``)."""
    hyperparameters: dict[str, Any] | None = None
    task: str | None = None
    labels: list[str] | None = None
    prompt_template: str | None = None
    auto_promote: bool = False
    seed: int | None = None
    metadata: dict[str, str] | None = None
    """Key-value pairs kept with the job (OpenAI's limits, :func:`check_metadata`)."""


METADATA_MAX_KEYS, METADATA_MAX_KEY_CHARS, METADATA_MAX_VALUE_CHARS = 16, 64, 512


def check_metadata(metadata: Any) -> dict[str, str] | None:
    """OpenAI's rules for ``metadata``: at most 16 string pairs, keys up to 64 characters and
    values up to 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object of string keys and values",
                           param="metadata")
    if len(metadata) > METADATA_MAX_KEYS:
        raise InvalidInput(f"metadata has {len(metadata)} keys; at most {METADATA_MAX_KEYS}",
                           param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidInput("metadata keys and values must be strings", param="metadata")
        if not key or len(key) > METADATA_MAX_KEY_CHARS:
            raise InvalidInput(f"metadata key {key[:80]!r} must have 1 to "
                               f"{METADATA_MAX_KEY_CHARS} characters", param="metadata")
        if len(value) > METADATA_MAX_VALUE_CHARS:
            raise InvalidInput(f"metadata[{key!r}] has {len(value)} characters; at most "
                               f"{METADATA_MAX_VALUE_CHARS}", param="metadata")
    return dict(metadata)


def create_job(platform: Platform, tenant: Tenant, request: JobRequest) -> FineTuningJob:
    """Check the request and store the job as ``validating_files`` with a ``created`` event.

    Raises InvalidInput (400) naming the bad field, RateLimited (429) when the queue is full,
    Forbidden (403 ``quota_exceeded``) when the adapter could not get its new version.
    """
    settings = platform.settings
    model, training_file, validation_file = (request.model, request.training_file,
                                             request.validation_file)
    task, labels, prompt_template = request.task, request.labels, request.prompt_template
    suffix, hyperparameters, seed = request.suffix, request.hyperparameters, request.seed
    auto_promote = request.auto_promote
    metadata = check_metadata(request.metadata)
    job_id = store.new_job_id()
    with platform.store.read() as session:
        train = _file(session, tenant, training_file, "training_file")
        valid = _file(session, tenant, validation_file, "validation_file") \
            if validation_file else None
        task = task or train.task
        if task not in tuple(AdapterTask):
            raise InvalidInput(f"task {task!r} is invalid; use 'chat' or 'classification'",
                               param="task")
        for row, param in ((train, "training_file"), (valid, "validation_file")):
            if row is not None and row.task != task:
                raise InvalidInput(
                    f"{param} {row.id} ({row.filename}) is a {row.task} dataset but the job's task "
                    f"is {task}; pass task={row.task!r} or upload a {task} file", param=param)
        parent = None
        if model != platform.base_model_name:
            parent = _parent(session, tenant, model)
            if parent.task != task:
                raise InvalidInput(f"model {model!r} is a {parent.task} adapter; a {task} job "
                                   "cannot warm-start from it", param="model")
        name = check_name(suffix or (parent.name if parent else f"ft-{job_id[6:14]}"),
                          NameKind.ADAPTER)
        existing = session.scalar(
            select(Adapter).where(Adapter.tenant_id == tenant.id, Adapter.name == name))
        if existing is not None and existing.task != task:
            raise InvalidInput(f"adapter {name!r} exists as a {existing.task} adapter; choose "
                               f"another suffix for a {task} job", param="suffix")
        # The job's result is version N+1 of this adapter: refuse now, not after training.
        check_adapter_quota(session, settings, tenant, name)
        per_tenant = settings.train_max_active_jobs_per_tenant
        if store.count_active(session, tenant) >= per_tenant:
            raise RateLimited(f"you already have {per_tenant} fine-tuning jobs queued, running "
                              "or paused (TUNELOOP_TRAIN_MAX_ACTIVE_JOBS_PER_TENANT); wait for "
                              "one to finish or cancel one", retry_after_s=30)
        max_active = settings.train_max_active_jobs
        if store.count_active(session) >= max_active:
            raise RateLimited(f"{max_active} fine-tuning jobs are already queued or running; "
                              "wait for one to finish or cancel one", retry_after_s=30)
    if task == AdapterTask.CLASSIFICATION:
        file_labels = sorted(train.stats.get("label_counts") or {})
        labels = list(labels) if labels else (parent.labels if parent and parent.labels
                                              else file_labels)
        missing = sorted(set(file_labels) - set(labels))
        if missing:
            raise InvalidInput(f"training_file has labels {missing} that are not in labels "
                               f"{labels}; add them or drop those examples", param="labels")
        labels, prompt_template = registry.check_classification_spec(
            task, labels, prompt_template or (parent.prompt_template if parent else None)
            or DEFAULT_CLASSIFICATION_TEMPLATE)
    else:
        labels, prompt_template = None, None
    n_examples = int(train.stats.get("examples") or 0)
    resolved = resolve_hyperparameters(hyperparameters, n_examples)
    check_bounds(resolved, n_examples, max_lora_rank=settings.max_lora_rank,
                 max_model_len=settings.max_model_len, max_steps=settings.train_max_steps,
                 workers=settings.train_workers)
    seed = seed if seed is not None else random.randrange(2**31)
    _check_train_config(task, labels, prompt_template, resolved, seed, settings)
    job = FineTuningJob(
        id=job_id, tenant_id=tenant.id, status=str(JobStatus.VALIDATING_FILES), model=model,
        parent_version_id=parent.version_id if parent else None, adapter_name=name, task=task,
        training_file=train.id, validation_file=valid.id if valid else None,
        hyperparameters=resolved, labels=labels, prompt_template=prompt_template,
        auto_promote=bool(auto_promote), seed=seed, run_name=f"tuneloop-{job_id}",
        runner=settings.training_runner, progress={}, job_metadata=metadata,
    )
    with platform.store.write() as session:
        session.add(job)
        session.flush()
        store.add_event(session, job.id, EventType.CREATED,
                        f"created fine-tuning job {job.id}: {task} adapter {name!r} from {model}",
                        {"model": model, "training_file": train.id, "suffix": name})
    return job


def _check_train_config(task: str, labels: list[str] | None, template: str | None,
                        resolved: dict[str, Any], seed: int, settings: Settings) -> None:
    """Build the TrainConfig once with placeholder paths: cross-field errors surface now."""
    if resolved.get("qlora") and not settings.train_use_gpu:
        raise InvalidInput(
            "hyperparameters.qlora=true needs a GPU: QLoRA's 4-bit bitsandbytes kernels run on "
            "CUDA only, and this tuneloop trains on CPU (TUNELOOP_TRAIN_USE_GPU=false). Remove "
            "qlora to train LoRA in full precision here, or train on GPU workers "
            "(TUNELOOP_TRAIN_USE_GPU=true with a GPU Ray cluster or KubeRay)",
            param="hyperparameters.qlora", code="qlora_needs_gpu")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            TrainConfig(base_model=tmp, output_dir=tmp, task=AdapterTask(task), train_file=f"{tmp}/x",
                        labels=labels, prompt_template=template or DEFAULT_CLASSIFICATION_TEMPLATE,
                        seed=seed, num_workers=settings.train_workers,
                        use_gpu=settings.train_use_gpu, **train_config_fields(resolved))
        except TrainConfigError as exc:
            raise InvalidInput(exc.message, param="hyperparameters", code=exc.code) from exc
