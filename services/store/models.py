"""ORM tables. The schema changes only through Alembic migrations in services/migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

MAX_ROW_ID = 2**31 - 1
"""The largest value of an ``Integer`` column on every store (32-bit on PostgreSQL): ids and
cursors from requests are checked against it before a query (larger ones are 4xx, not 500)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class TenantState(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class AdapterTask(StrEnum):
    CHAT = "chat"
    CLASSIFICATION = "classification"


class VersionState(StrEnum):
    """Lifecycle of an adapter version. Only READY versions are served or promoted."""

    PENDING = "pending"  # registered, parity/eval checks still running
    READY = "ready"  # servable
    FAILED = "failed"  # checks failed; kept for the record, never served
    RETIRED = "retired"  # withdrawn by an operator; never served again

    @property
    def is_terminal(self) -> bool:
        return self in (VersionState.FAILED, VersionState.RETIRED)


class ChampionAction(StrEnum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"


class JobStatus(StrEnum):
    """validating_files -> queued -> running -> succeeded | failed | cancelled; a queued or
    running job can be paused (its run stopped, checkpoints kept) and resumed (queued again)."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class EnumString(TypeDecorator[Any]):
    """A StrEnum column stored as its value in a VARCHAR, exactly like a plain ``String``
    (no schema change); rows read back as the enum, and writing a value outside it raises
    ValueError."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> StrEnum | None:
        return None if value is None else self.enum(value)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[TenantState] = mapped_column(EnumString(TenantState, 16),
                                               default=TenantState.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """A tenant's API key, stored as a sha256 hash; ``prefix`` lets people tell keys apart."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AdminKey(Base):
    """Generated admin keys (used when TUNELOOP_ADMIN_KEY is unset), stored hashed."""

    __tablename__ = "admin_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Adapter(Base):
    """A named adapter of one tenant; ``champion_version_id`` is what the bare name serves."""

    __tablename__ = "adapters"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    task: Mapped[AdapterTask] = mapped_column(EnumString(AdapterTask, 16))
    champion_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id", use_alter=True, name="fk_adapters_champion"),
        nullable=True,
    )
    last_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The highest version number ever given, deleted versions included: a new version counts
    on from it, so a number (and its engine-side name) is never reused."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AdapterVersion(Base):
    """One immutable version N of an adapter: weights (by content hash), task, labels, lineage."""

    __tablename__ = "adapter_versions"
    __table_args__ = (UniqueConstraint("adapter_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[VersionState] = mapped_column(EnumString(VersionState, 16),
                                                default=VersionState.READY)
    task: Mapped[AdapterTask] = mapped_column(EnumString(AdapterTask, 16))
    labels: Mapped[list | None] = mapped_column(JSON, nullable=True)
    prompt_template: Mapped[str | None] = mapped_column(Text, nullable=True)
    rank: Mapped[int] = mapped_column(Integer)
    base_fingerprint: Mapped[str] = mapped_column(String(64))
    artifact_key: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict] = mapped_column(JSON, default=dict)
    failure: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it is FAILED
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ChampionChange(Base):
    """History of champion switches; rollback walks it backwards."""

    __tablename__ = "champion_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    from_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id"), nullable=True
    )
    to_version_id: Mapped[int] = mapped_column(ForeignKey("adapter_versions.id"))
    action: Mapped[ChampionAction] = mapped_column(EnumString(ChampionAction, 16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RequestRecord(Base):
    """One served request (chat, completion, classify): what feedback refers to by ``id``."""

    __tablename__ = "requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    adapter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    adapter_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    route: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(Integer)
    input: Mapped[dict | list | str | None] = mapped_column(JSON, nullable=True)
    output: Mapped[dict | list | str | None] = mapped_column(JSON, nullable=True)
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class FeedbackRecord(Base):
    """Feedback on an earlier response: a rating, a ground-truth label, a correction."""

    __tablename__ = "feedback"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer, index=True)
    response_id: Mapped[str] = mapped_column(String(64), index=True)
    adapter: Mapped[str | None] = mapped_column(String(64), nullable=True)
    adapter_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)
    label: Mapped[str | None] = mapped_column(String(256), nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class DatasetFile(Base):
    """An uploaded dataset (files API). Content lives in the artifact store under ``sha256``."""

    __tablename__ = "dataset_files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "file-<hex>"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    filename: Mapped[str] = mapped_column(String(256))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    task: Mapped[AdapterTask] = mapped_column(EnumString(AdapterTask, 16))
    format: Mapped[str] = mapped_column(String(8))
    stats: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FineTuningJob(Base):
    """One fine-tuning job; ``status`` follows :class:`JobStatus`."""

    __tablename__ = "fine_tuning_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "ftjob-<hex>"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[JobStatus] = mapped_column(EnumString(JobStatus, 24), index=True)
    model: Mapped[str] = mapped_column(String(200))
    parent_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id"), nullable=True
    )
    adapter_name: Mapped[str] = mapped_column(String(64))
    task: Mapped[AdapterTask] = mapped_column(EnumString(AdapterTask, 16))
    # File ids without a foreign key (migration 0009): a file can be deleted once its jobs
    # finished, and the job keeps naming it (as OpenAI's jobs do).
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hyperparameters: Mapped[dict] = mapped_column(JSON, default=dict)
    labels: Mapped[list | None] = mapped_column(JSON, nullable=True)
    prompt_template: Mapped[str | None] = mapped_column(Text, nullable=True)
    auto_promote: Mapped[bool] = mapped_column(default=False)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    run_name: Mapped[str] = mapped_column(String(64))
    runner: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    pause_requested: Mapped[bool] = mapped_column(default=False)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    result_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("adapter_versions.id"), nullable=True
    )
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    result_files: Mapped[list | None] = mapped_column(JSON, nullable=True)
    """Ids of the files a succeeded job published (its step metrics CSV, purpose
    ``fine-tune-results``); kept when a file is deleted, like the training file's id."""
    progress: Mapped[dict] = mapped_column(JSON, default=dict)
    job_metadata: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    """The client's key-value pairs (OpenAI ``metadata``: at most 16, 64/512 characters)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FineTuningEvent(Base):
    """A typed event of a job (``type`` from :class:`training.jobs.states.EventType`)."""

    __tablename__ = "fine_tuning_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    type: Mapped[str] = mapped_column(String(24))
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FineTuningCheckpoint(Base):
    """A checkpoint a job's run saved (step and the metrics at that step)."""

    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "step"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "ftckpt-<hex>"
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- the monitor loop (monitoring/loop.py) ---------------------------------------------------


class RetrainRunStatus(StrEnum):
    """A monitor-started retrain: training -> promoted | awaiting_approval | rejected | dry_run |
    failed | cancelled; a promoted run whose version is rolled back ends ``rolled_back``."""

    TRAINING = "training"
    PROMOTED = "promoted"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"

    @property
    def is_terminal(self) -> bool:
        return self is not RetrainRunStatus.TRAINING


class RetrainPolicyRecord(Base):
    """The retrain policy of one adapter (``monitoring.policy.RetrainPolicy`` as JSON)."""

    __tablename__ = "retrain_policies"

    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    policy: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MonitorReport(Base):
    """One monitor observation of an adapter's champion: drift (when a new window was tested)
    and quality. ``drifted`` is None when the window was too small; ``new_window`` false when
    only quality was re-evaluated (the row does not count in the drift history)."""

    __tablename__ = "monitor_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    new_window: Mapped[bool] = mapped_column(default=True)
    drifted: Mapped[bool | None] = mapped_column(nullable=True)
    n_window: Mapped[int] = mapped_column(Integer, default=0)
    window_end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    input_drift: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    prediction_drift: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    quality: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class MonitorEvent(Base):
    """A decision of the monitor (policy, dataset, job, gate, promotion, rollback) and its reason."""

    __tablename__ = "monitor_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    action: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class RetrainRun(Base):
    """A retrain the monitor started: compiled dataset, its files, the job, gate and outcome."""

    __tablename__ = "retrain_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "rtrun-<hex>"
    adapter_id: Mapped[int] = mapped_column(ForeignKey("adapters.id"), index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[RetrainRunStatus] = mapped_column(EnumString(RetrainRunStatus, 24),
                                                     index=True)
    trigger: Mapped[str] = mapped_column(String(32))
    champion_version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("fine_tuning_jobs.id"), nullable=True)
    dataset_version: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[dict] = mapped_column(JSON, default=dict)
    training_file: Mapped[str] = mapped_column(String(64))  # no foreign key: see FineTuningJob
    validation_file: Mapped[str] = mapped_column(String(64))
    candidate_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    evaluation: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    gate: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    baseline: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ServingChanges(Base):
    """One row counting committed changes to what serving caches (tenants, keys, adapters,
    versions): every process polls it and drops its caches when it moves (services/store/changes.py)."""

    __tablename__ = "serving_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger, default=0)
