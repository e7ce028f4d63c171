"""The transitions of a fine-tuning job's lifecycle (:class:`services.store.models.JobStatus`,
OpenAI's job statuses) and the types of its events."""

from __future__ import annotations

from enum import StrEnum

from services.store.models import JobStatus

# Transitions the job store allows; anything else is a bug or a lost race (Conflict).
ALLOWED = {
    JobStatus.VALIDATING_FILES: {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED},
    JobStatus.QUEUED: {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED,
                       JobStatus.PAUSED},
    JobStatus.RUNNING: {JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED,
                        JobStatus.CANCELLED, JobStatus.PAUSED},
    JobStatus.PAUSED: {JobStatus.QUEUED, JobStatus.CANCELLED},
}


class EventType(StrEnum):
    """What a job event reports. ``metrics`` is OpenAI's name for per-step training metrics."""

    CREATED = "created"
    VALIDATED = "validated"
    QUEUED = "queued"
    STARTED = "started"
    METRICS = "metrics"
    CHECKPOINT = "checkpoint"
    EVALUATED = "evaluated"
    GATE_DECISION = "gate_decision"  # candidate vs champion (or base) on the same split
    PARITY_CHECKED = "parity_checked"  # engine vs PEFT greedy replies; data says passed or not
    PARITY_SKIPPED = "parity_skipped"  # no engine to check against; data gives the reason
    PUBLISHED = "published"
    PROMOTED = "promoted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"
    RESUMED = "resumed"
    MESSAGE = "message"
