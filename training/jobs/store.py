"""Job rows, events and checkpoints in the store: create, read, transition, cancel, claim.

Every read takes the caller's tenant: another tenant's job is NotFound, like a missing one.
Status changes go through :func:`transition`, which enforces :data:`training.jobs.states.ALLOWED`
so two processes (a server's job manager, a CLI) can never both start or finish one job.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast, overload

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from services.errors import Conflict, NotFound
from services.store.models import (
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
    JobStatus,
    Tenant,
    TenantState,
)
from training.jobs.states import ALLOWED, EventType

ACTIVE = (JobStatus.VALIDATING_FILES, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED)


def now() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@overload
def unix(value: datetime) -> int: ...
@overload
def unix(value: None) -> None: ...
@overload
def unix(value: datetime | None) -> int | None: ...
def unix(value: datetime | None) -> int | None:
    return int(as_utc(value).timestamp()) if value is not None else None


def new_job_id() -> str:
    return f"ftjob-{uuid.uuid4().hex[:24]}"


def get_job(session: Session, tenant: Tenant | None, job_id: str) -> FineTuningJob:
    """The job (any tenant's when ``tenant`` is None: the job manager)."""
    row = session.get(FineTuningJob, job_id) if isinstance(job_id, str) else None
    if row is None or (tenant is not None and row.tenant_id != tenant.id):
        raise NotFound(f"fine-tuning job {job_id!r} does not exist", param="fine_tuning_job_id",
                       code="job_not_found")
    return row


def list_jobs(session: Session, tenant: Tenant, *, after: str | None = None, limit: int = 20,
              metadata: dict[str, str] | None = None) -> tuple[list[FineTuningJob], bool]:
    """Newest first; ``after`` is a job id (the page continues with older jobs); ``metadata``:
    only jobs whose metadata has every one of these pairs."""
    stmt = select(FineTuningJob).where(FineTuningJob.tenant_id == tenant.id)
    for key, value in (metadata or {}).items():
        stmt = stmt.where(FineTuningJob.job_metadata[key].as_string() == value)
    if after:
        cursor = get_job(session, tenant, after)
        stmt = stmt.where(
            (FineTuningJob.created_at < cursor.created_at)
            | ((FineTuningJob.created_at == cursor.created_at) & (FineTuningJob.id < cursor.id)))
    rows = list(session.scalars(
        stmt.order_by(FineTuningJob.created_at.desc(), FineTuningJob.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def count_active(session: Session, tenant: Tenant | None = None) -> int:
    stmt = select(func.count()).select_from(FineTuningJob).where(
        FineTuningJob.status.in_([s.value for s in ACTIVE]))
    if tenant is not None:
        stmt = stmt.where(FineTuningJob.tenant_id == tenant.id)
    return int(session.scalar(stmt) or 0)


def add_event(session: Session, job_id: str, type_: EventType, message: str,
              data: dict[str, Any] | None = None, level: str = "info") -> FineTuningEvent:
    event = FineTuningEvent(job_id=job_id, type=str(type_), level=level, message=message,
                            data=data)
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, job_id: str, *, after: int | None = None, limit: int = 20,
                oldest_first: bool = False) -> tuple[list[FineTuningEvent], bool]:
    """Newest first (OpenAI order), older than event ``after``; or oldest first, newer than it."""
    stmt = select(FineTuningEvent).where(FineTuningEvent.job_id == job_id)
    if oldest_first:
        if after is not None:
            stmt = stmt.where(FineTuningEvent.id > after)
        stmt = stmt.order_by(FineTuningEvent.id)
    else:
        if after is not None:
            stmt = stmt.where(FineTuningEvent.id < after)
        stmt = stmt.order_by(FineTuningEvent.id.desc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def count_restarts(session: Session, job_id: str) -> int:
    """How many times the job was queued again after the process running it died."""
    rows = session.scalars(select(FineTuningEvent.data).where(
        FineTuningEvent.job_id == job_id, FineTuningEvent.type == EventType.QUEUED))
    return sum(1 for data in rows if isinstance(data, dict) and data.get("restart"))


def add_checkpoint(session: Session, job_id: str, step: int, metrics: dict[str, Any]) -> bool:
    """Record a checkpoint once per (job, step); False when it was known (a resumed run)."""
    exists = session.scalar(select(FineTuningCheckpoint.id).where(
        FineTuningCheckpoint.job_id == job_id, FineTuningCheckpoint.step == step))
    if exists:
        return False
    session.add(FineTuningCheckpoint(id=f"ftckpt-{uuid.uuid4().hex[:24]}", job_id=job_id,
                                     step=step, metrics=metrics))
    session.flush()
    return True


def list_checkpoints(session: Session, job_id: str, *, after: str | None = None,
                     limit: int = 10) -> tuple[list[FineTuningCheckpoint], bool]:
    """Newest (highest step) first; ``after`` is a checkpoint id."""
    stmt = select(FineTuningCheckpoint).where(FineTuningCheckpoint.job_id == job_id)
    if after:
        cursor = session.get(FineTuningCheckpoint, after)
        if cursor is not None:
            stmt = stmt.where(FineTuningCheckpoint.step < cursor.step)
    rows = list(session.scalars(stmt.order_by(FineTuningCheckpoint.step.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


class JobMoved(Conflict):
    """Another process changed the job's status after this caller read it."""


def _settled(session: Session, job: FineTuningJob,
             act: Callable[[FineTuningJob], FineTuningJob]) -> FineTuningJob:
    """``act(job)``; when another process moved the job meanwhile (its files validated, claimed
    by a manager), the job is read again and ``act`` decides on its new state (3 tries)."""
    for attempt in range(3):
        try:
            return act(job)
        except JobMoved:
            if attempt == 2:
                raise
            session.refresh(job)  # the state the other process committed
    raise AssertionError("unreachable")


def transition(session: Session, job: FineTuningJob, status: JobStatus, *,
               event: tuple[EventType, str, dict | None] | None = None,
               error: dict[str, Any] | None = None, owner: str | None = None) -> FineTuningJob:
    """Move ``job`` to ``status`` atomically (compare-and-set on the current status).

    Raises Conflict when the job is no longer in the status this caller read (another process
    moved it first) or the transition is not allowed.
    """
    current = JobStatus(job.status)
    if status not in ALLOWED.get(current, set()):
        raise Conflict(f"fine-tuning job {job.id} is {current}; it cannot become {status}")
    values: dict[str, Any] = {"status": str(status)}
    if status is JobStatus.RUNNING:
        values.update(owner=owner, heartbeat_at=now(), started_at=job.started_at or now())
    if status in (JobStatus.QUEUED, JobStatus.PAUSED):
        values.update(owner=None, heartbeat_at=None, pause_requested=False)
    if status.is_terminal:
        values.update(finished_at=now(), owner=None)
    if error is not None:
        values["error"] = error
    result = cast("CursorResult[Any]", session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job.id, FineTuningJob.status == str(current))
        .values(**values)))
    if result.rowcount != 1:
        raise JobMoved(f"fine-tuning job {job.id} changed state meanwhile; read it again")
    for key, value in values.items():
        setattr(job, key, value)
    if event is not None:
        add_event(session, job.id, *event, level="error" if status is JobStatus.FAILED else "info")
    return job


def fail(session: Session, job: FineTuningJob, code: str, message: str) -> FineTuningJob:
    """Mark the job failed with an OpenAI-shaped error whose message says what to do."""
    return transition(session, job, JobStatus.FAILED,
                      error={"code": code, "message": message, "param": None},
                      event=(EventType.FAILED, message, {"code": code}))


def request_pause(session: Session, tenant: Tenant, job_id: str) -> FineTuningJob:
    """Pause a queued job at once; ask the owner of a running one to stop its run (the job then
    keeps its checkpoints and waits, ``paused``, until it is resumed)."""

    def pause(job: FineTuningJob) -> FineTuningJob:
        status = JobStatus(job.status)
        if status is JobStatus.PAUSED:
            return job
        if status is JobStatus.RUNNING:
            if not job.pause_requested:
                job.pause_requested = True
                add_event(session, job.id, EventType.MESSAGE, "pause requested; stopping the "
                          "training run at its latest checkpoint")
            return job
        if status is not JobStatus.QUEUED:
            raise Conflict(f"fine-tuning job {job_id} is {status}; only a queued or running job "
                           "can be paused")
        return transition(session, job, JobStatus.PAUSED,
                          event=(EventType.PAUSED, "job paused before it started", None))

    return _settled(session, get_job(session, tenant, job_id), pause)


def resume(session: Session, tenant: Tenant, job_id: str) -> FineTuningJob:
    """Queue a paused job again; its run continues from its latest checkpoint."""
    job = get_job(session, tenant, job_id)
    status = JobStatus(job.status)
    if status is not JobStatus.PAUSED:
        raise Conflict(f"fine-tuning job {job_id} is {status}; only a paused job can be resumed")
    checkpoints, _ = list_checkpoints(session, job.id, limit=1)
    step = checkpoints[0].step if checkpoints else None
    where = (f"continues from its latest checkpoint (step {step} or later)" if step is not None
             else "starts from the beginning (no checkpoint yet)")
    return transition(session, job, JobStatus.QUEUED,
                      event=(EventType.RESUMED, f"job resumed: queued again; the run {where}",
                             {"resume_step": step}))


def request_cancel(session: Session, tenant: Tenant, job_id: str) -> FineTuningJob:
    """Cancel a job that has not started at once; ask the owner to stop a running one. A job
    another process moves meanwhile is cancelled in its new state."""

    def cancel(job: FineTuningJob) -> FineTuningJob:
        status = JobStatus(job.status)
        if status.is_terminal:
            raise Conflict(f"fine-tuning job {job_id} is already {status}; nothing to cancel")
        if status is JobStatus.RUNNING:
            if not job.cancel_requested:
                job.cancel_requested = True
                add_event(session, job.id, EventType.MESSAGE, "cancellation requested; "
                          "stopping the training run")
            return job
        return transition(session, job, JobStatus.CANCELLED,
                          event=(EventType.CANCELLED, "job cancelled before it started", None))

    return _settled(session, get_job(session, tenant, job_id), cancel)


def next_job(session: Session, status: JobStatus, exclude: set[str] | frozenset[str] = frozenset()
             ) -> FineTuningJob | None:
    """The next job in ``status`` (not in ``exclude``) of an active tenant, taking tenants in
    turn: first the tenants with the fewest jobs running, then the one whose last job started
    longest ago, then the oldest job. A tenant that queues a hundred jobs waits behind one job
    of every other tenant; a disabled tenant's jobs wait until it is enabled again."""
    running = (select(FineTuningJob.tenant_id, func.count().label("n"))
               .where(FineTuningJob.status == str(JobStatus.RUNNING))
               .group_by(FineTuningJob.tenant_id).subquery())
    last_start = (select(FineTuningJob.tenant_id, func.max(FineTuningJob.started_at).label("at"))
                  .group_by(FineTuningJob.tenant_id).subquery())
    stmt = (select(FineTuningJob)
            .join(Tenant, Tenant.id == FineTuningJob.tenant_id)
            .outerjoin(running, running.c.tenant_id == FineTuningJob.tenant_id)
            .outerjoin(last_start, last_start.c.tenant_id == FineTuningJob.tenant_id)
            .where(FineTuningJob.status == str(status), Tenant.state == TenantState.ACTIVE))
    if exclude:
        stmt = stmt.where(FineTuningJob.id.not_in(list(exclude)))
    never = datetime(1970, 1, 1, tzinfo=UTC)
    return session.scalar(stmt.order_by(
        func.coalesce(running.c.n, 0), func.coalesce(last_start.c.at, never),
        FineTuningJob.created_at, FineTuningJob.id).limit(1))


def heartbeat(session: Session, job_id: str, owner: str, **values: Any) -> FineTuningJob | None:
    """Refresh the owner's heartbeat (and ``values``); None when the job is no longer ours."""
    result = cast("CursorResult[Any]", session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == job_id, FineTuningJob.owner == owner,
               FineTuningJob.status == str(JobStatus.RUNNING))
        .values(heartbeat_at=now(), **values)))
    if result.rowcount != 1:
        return None
    return session.get(FineTuningJob, job_id, populate_existing=True)


def stale_running(session: Session, owner: str, stale_after_s: float) -> list[FineTuningJob]:
    """Running jobs of other owners whose heartbeat is older than ``stale_after_s``
    (their process died or was restarted)."""
    cutoff = now() - timedelta(seconds=stale_after_s)
    rows = session.scalars(select(FineTuningJob).where(
        FineTuningJob.status == str(JobStatus.RUNNING)))
    return [r for r in rows if r.owner != owner
            and (r.heartbeat_at is None or as_utc(r.heartbeat_at) < cutoff)]
