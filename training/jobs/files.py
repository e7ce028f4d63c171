"""Dataset files (the files API): detect the format, validate every line, store by content hash.

A file that has any problem is refused with :class:`training.errors.DatasetError` (HTTP 400),
whose message lists every problem with its line number; nothing is stored for it. A valid file
is stored once in the artifact store (key = sha256 of its bytes) and gets a ``file-...`` row with
its stats (task, format, examples, tokens, label counts, and the warnings: duplicates and, unless
``TUNELOOP_DATASET_STRICT``, texts repeated with another label, each with its line).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.artifact_gc import keep_stored
from services.errors import InvalidInput, NotFound
from services.platform import Platform
from services.quotas import check_file_quota
from services.store.models import AdapterTask, DatasetFile, Tenant
from training.datasets import ValidationReport, sniff_format, validate_dataset
from training.errors import DatasetError

PURPOSES = ("fine-tune",)
RESULTS_PURPOSE = "fine-tune-results"
"""A job's result file (:mod:`training.jobs.results`): created by tuneloop, never uploaded."""
PROCESSED = "processed"  # OpenAI's status of a usable file
MAX_FILENAME = 256


def detect_task(data: bytes, filename: str | None) -> tuple[str, Literal["jsonl", "csv"]]:
    """(task, format): CSV is classification; JSONL is chat when its first object has
    ``messages``, classification when it has ``text`` (chat when nothing parses)."""
    fmt = sniff_format(data, filename)
    if fmt == "csv":
        return "classification", fmt
    for raw in data.splitlines():
        try:
            record = json.loads(raw.lstrip(b"\xef\xbb\xbf"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(record, dict):
            return ("chat" if "messages" in record or "text" not in record
                    else "classification"), fmt
    return "chat", fmt


_TOKENIZER_LOCK = threading.Lock()


def _tokenizer(base_model_dir: str) -> Any:
    # One thread at a time: transformers' lazy imports are not thread-safe (two threads
    # importing it at once got "cannot import name 'AutoTokenizer'"), and one load is enough.
    with _TOKENIZER_LOCK:
        return _load_tokenizer(base_model_dir)


@lru_cache(maxsize=4)
def _load_tokenizer(base_model_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


def warm_up(platform: Platform) -> None:
    """Load the tokenizer file validation uses (seconds, once per process), so the first upload
    does not wait for it; the app calls it in the background at start."""
    _tokenizer(str(platform.base_model_dir))


def validate_file(platform: Platform, data: bytes, filename: str, task: str | None = None,
                  **kwargs: Any) -> ValidationReport:
    """Validate ``data`` with the base model's tokenizer (limit: ``settings.max_model_len``).

    ``task`` forces chat or classification (default: detected); ``kwargs`` go to the validator
    (e.g. ``labels``, ``template``); ``settings.dataset_strict`` makes conflicting labels issues.
    The report lists every issue and warning; nothing raises for them.
    """
    from training.tokenize import conversation_token_counter

    detected, fmt = detect_task(data, filename)
    task = task or detected
    if task not in tuple(AdapterTask):
        raise InvalidInput(f"task {task!r} is invalid; use 'chat' or 'classification'",
                           param="task")
    counter = conversation_token_counter(_tokenizer(str(platform.base_model_dir)))
    options: dict[str, Any] = {"count_tokens": counter,
                               "max_tokens": platform.settings.max_model_len,
                               "strict": platform.settings.dataset_strict, **kwargs}
    if task == AdapterTask.CLASSIFICATION:
        options.update(filename=filename, fmt=fmt)
    return validate_dataset(data, AdapterTask(task), **options)  # checked above


def check_upload(platform: Platform, tenant: Tenant, purpose: str) -> None:
    """Raise what would refuse any upload of ``purpose`` by ``tenant`` (InvalidInput for the
    purpose, Forbidden at TUNELOOP_TENANT_MAX_FILES), before its bytes are read or validated."""
    if purpose == RESULTS_PURPOSE:
        raise InvalidInput(f"purpose {purpose!r} is for the result files tuneloop publishes "
                           "when a fine-tuning job succeeds; upload datasets with 'fine-tune'",
                           param="purpose")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose {purpose!r} is not supported; use 'fine-tune'",
                           param="purpose")
    with platform.store.read() as session:
        check_file_quota(session, platform.settings, tenant)


def store_file(platform: Platform, tenant: Tenant, data: bytes, filename: str,
               purpose: str = "fine-tune", task: str | None = None) -> DatasetFile:
    """Validate and store an upload; raises DatasetError (every issue, with line numbers),
    Forbidden when the tenant is at TUNELOOP_TENANT_MAX_FILES (checked before validating)."""
    check_upload(platform, tenant, purpose)
    filename = (filename or "upload.jsonl").replace("\\", "/").rsplit("/", 1)[-1][:MAX_FILENAME]
    report = validate_file(platform, data, filename, task)
    if report.issues:
        raise DatasetError(report.issues, name=f"file {filename}")
    key = platform.artifacts.put_bytes(data)
    stats = report.stats.to_dict()
    row = DatasetFile(
        id=f"file-{uuid.uuid4().hex[:24]}", tenant_id=tenant.id, filename=filename,
        purpose=purpose, bytes=len(data), sha256=key, status=PROCESSED, task=report.task,
        format=detect_task(data, filename)[1], stats=stats,
    )
    with platform.store.write() as session:
        # a delete may have collected an identical blob since put_bytes (services/artifact_gc)
        keep_stored(session, platform.artifacts, key, lambda: platform.artifacts.put_bytes(data))
        session.add(row)
    return row


def get_file(session: Session, tenant: Tenant, file_id: str | None, param: str = "file_id"
             ) -> DatasetFile:
    """The tenant's file; another tenant's file is NotFound, like a missing one."""
    row = session.get(DatasetFile, file_id) if isinstance(file_id, str) else None
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"file {file_id!r} does not exist; upload it with POST /v1/files",
                       param=param, code="file_not_found")
    return row


def list_files(session: Session, tenant: Tenant, purpose: str | None = None,
               limit: int = 10_000) -> list[DatasetFile]:
    stmt = select(DatasetFile).where(DatasetFile.tenant_id == tenant.id)
    if purpose:
        stmt = stmt.where(DatasetFile.purpose == purpose)
    return list(session.scalars(stmt.order_by(DatasetFile.created_at.desc()).limit(limit)))


def file_bytes(platform: Platform, row: DatasetFile) -> bytes:
    return platform.artifacts.get_bytes(row.sha256)


def file_chunks(platform: Platform, row: DatasetFile) -> Iterator[bytes]:
    """The file's content in pieces (a download never holds the whole file), checked against
    its hash before the first piece (NotFound / CorruptArtifact raised by this call)."""
    return platform.artifacts.open_verified(row.sha256)
