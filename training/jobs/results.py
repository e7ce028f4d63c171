"""A succeeded job's result file (OpenAI ``result_files``): its step metrics as a CSV file of the
tenant, purpose ``fine-tune-results``, downloadable with ``GET /v1/files/{id}/content``.

The columns are OpenAI's (:data:`COLUMNS`), one row per recorded step, built from the job's
``metrics`` events (:class:`training.jobs.execute.RunFollower`); a cell is empty where the value
is unknown: ``valid_loss`` on steps without a validation, and both token accuracies, which
tuneloop's recipe does not measure.

Only tuneloop creates these files (an upload with their purpose is refused). They count towards
the tenant's ``TUNELOOP_TENANT_MAX_FILES`` like any file, but a job at the quota still gets its
result file: a finished training is never failed over its report. Deleting the job's adapter or
the tenant deletes it; ``DELETE /v1/files/{id}`` deletes it alone (the job keeps the id).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.artifact_gc import keep_stored
from services.platform import Platform
from services.store.models import DatasetFile, FineTuningEvent, FineTuningJob
from training.jobs.files import PROCESSED, RESULTS_PURPOSE
from training.jobs.states import EventType

log = logging.getLogger("tuneloop.jobs")

COLUMNS = ("step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy")
"""OpenAI's header of a fine-tuning job's result file."""
FILENAME = "step_metrics.csv"
MEASURED = frozenset({"step", "train_loss", "valid_loss"})
"""The columns a ``metrics`` event's data holds under the same key; the others stay empty."""


def _cell(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def metrics_csv(steps: Iterable[dict[str, Any]]) -> bytes:
    """The CSV of ``steps`` (``metrics`` event data, oldest first): one row per step, in step
    order; a step recorded twice (a lost run that resumed before it) keeps its last record."""
    latest: dict[int, dict[str, Any]] = {}
    for data in steps:
        if isinstance(data.get("step"), int):
            latest[data["step"]] = data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for step in sorted(latest):
        data = latest[step]
        writer.writerow([_cell(data.get(c)) if c in MEASURED else "" for c in COLUMNS])
    return out.getvalue().encode()


def step_metrics(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The data of the job's ``metrics`` events, oldest first."""
    rows = session.scalars(select(FineTuningEvent.data).where(
        FineTuningEvent.job_id == job_id, FineTuningEvent.type == str(EventType.METRICS))
        .order_by(FineTuningEvent.id))
    return [data for data in rows if isinstance(data, dict)]


@dataclass(frozen=True)
class ResultFile:
    """A result file's content, already in the artifact store under ``key``."""

    data: bytes
    key: str
    steps: int


def put_result_file(platform: Platform, job_id: str) -> ResultFile | None:
    """Build the job's CSV from its events and store the blob (before the transaction that
    finishes the job); None, logged, when the artifact store refuses it."""
    with platform.store.read() as session:
        steps = step_metrics(session, job_id)
    data = metrics_csv(steps)
    try:
        key = platform.artifacts.put_bytes(data)
    except OSError as exc:
        log.warning("the result file of job %s could not be stored: %s", job_id, exc)
        return None
    return ResultFile(data, key, data.count(b"\n") - 1)


def add_result_file(session: Session, platform: Platform, job: FineTuningJob,
                    result: ResultFile) -> DatasetFile | None:
    """In the transaction that marks ``job`` succeeded: the file's row, named in
    ``job.result_files``. No quota check (see the module docstring); None, logged, when the
    blob was collected meanwhile and cannot be stored again."""
    try:
        keep_stored(session, platform.artifacts, result.key,
                    lambda: platform.artifacts.put_bytes(result.data))
    except OSError as exc:
        log.warning("the result file of job %s could not be stored: %s", job.id, exc)
        return None
    row = DatasetFile(
        id=f"file-{uuid.uuid4().hex[:24]}", tenant_id=job.tenant_id, filename=FILENAME,
        purpose=RESULTS_PURPOSE, bytes=len(result.data), sha256=result.key, status=PROCESSED,
        task=job.task, format="csv", stats={"steps": result.steps, "job_id": job.id})
    session.add(row)
    job.result_files = [row.id]
    return row
