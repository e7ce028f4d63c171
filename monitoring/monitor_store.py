"""Store access of the monitor loop: retrain policies, drift/quality reports, monitor events and
retrain runs. Plain functions over a SQLAlchemy session; callers own the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.orm import Session

from monitoring.policy import RetrainPolicy
from services.store.models import (
    Adapter,
    FineTuningJob,
    MonitorEvent,
    MonitorReport,
    RetrainPolicyRecord,
    RetrainRun,
    RetrainRunStatus,
    Tenant,
    utcnow,
)
from training.jobs.store import ACTIVE, as_utc


class EventType(StrEnum):
    """What a monitor event records (``monitor_events.type``)."""

    DECISION = "decision"  # should_retrain's answer (action retrain / skip / dry_run)
    DATASET = "dataset"  # a dataset compiled from feedback and stored as files
    JOB = "job"  # a training job started or finished
    GATE = "gate"  # the candidate vs champion comparison
    PROMOTION = "promotion"  # promote, await approval, reject, dry run
    ROLLBACK = "rollback"  # a promoted champion rolled back (or would have been)
    POLICY = "policy"  # the policy was set or removed
    ERROR = "error"  # a step failed; the message says what to do


# -- policies ---------------------------------------------------------------------------------


def get_policy(session: Session, adapter_id: int) -> RetrainPolicyRecord | None:
    return session.get(RetrainPolicyRecord, adapter_id)


def put_policy(session: Session, adapter: Adapter, policy: RetrainPolicy) -> RetrainPolicyRecord:
    """Create or replace the adapter's policy."""
    row = session.get(RetrainPolicyRecord, adapter.id)
    body = policy.model_dump(mode="json")
    if row is None:
        row = RetrainPolicyRecord(adapter_id=adapter.id, tenant_id=adapter.tenant_id, policy=body)
        session.add(row)
    else:
        row.policy = body
        row.updated_at = utcnow()
    session.flush()
    return row


def delete_policy(session: Session, adapter_id: int) -> bool:
    result = cast("CursorResult[Any]", session.execute(delete(RetrainPolicyRecord).where(
        RetrainPolicyRecord.adapter_id == adapter_id)))
    return bool(result.rowcount)


def watched_adapters(session: Session) -> list[tuple[Tenant, Adapter, RetrainPolicy]]:
    """Every adapter with a policy, oldest policy first."""
    rows = session.execute(
        select(Tenant, Adapter, RetrainPolicyRecord)
        .join(Adapter, Adapter.id == RetrainPolicyRecord.adapter_id)
        .join(Tenant, Tenant.id == Adapter.tenant_id)
        .order_by(RetrainPolicyRecord.created_at, RetrainPolicyRecord.adapter_id)
    ).all()
    return [(t, a, RetrainPolicy.model_validate(p.policy)) for t, a, p in rows]


# -- events -----------------------------------------------------------------------------------


def add_event(session: Session, adapter_id: int, type_: str, message: str, *,
              action: str | None = None, reason: str | None = None,
              data: dict[str, Any] | None = None, now: datetime | None = None) -> MonitorEvent:
    row = MonitorEvent(adapter_id=adapter_id, type=type_, action=action, reason=reason,
                       message=message, data=data, created_at=now or utcnow())
    session.add(row)
    session.flush()
    return row


def list_events(session: Session, adapter_id: int, *, limit: int = 50,
                before: int | None = None, type_: str | None = None) -> list[MonitorEvent]:
    """Newest first; ``before``: only events with a smaller id (pagination)."""
    stmt = select(MonitorEvent).where(MonitorEvent.adapter_id == adapter_id)
    if before is not None:
        stmt = stmt.where(MonitorEvent.id < before)
    if type_ is not None:
        stmt = stmt.where(MonitorEvent.type == type_)
    return list(session.scalars(stmt.order_by(MonitorEvent.id.desc()).limit(limit)))


# -- reports ----------------------------------------------------------------------------------


def add_report(session: Session, adapter_id: int, **fields: Any) -> MonitorReport:
    row = MonitorReport(adapter_id=adapter_id, **fields)
    session.add(row)
    session.flush()
    return row


def list_reports(session: Session, adapter_id: int, *, limit: int = 20,
                 windows_only: bool = False) -> list[MonitorReport]:
    """Newest first; ``windows_only``: reports that tested a new drift window."""
    stmt = select(MonitorReport).where(MonitorReport.adapter_id == adapter_id)
    if windows_only:
        stmt = stmt.where(MonitorReport.new_window.is_(True))
    return list(session.scalars(stmt.order_by(MonitorReport.id.desc()).limit(limit)))


def last_window(session: Session, adapter_id: int, version: int) -> MonitorReport | None:
    """The newest report of ``version`` that tested a drift window."""
    return session.scalar(
        select(MonitorReport)
        .where(MonitorReport.adapter_id == adapter_id, MonitorReport.version == version,
               MonitorReport.new_window.is_(True))
        .order_by(MonitorReport.id.desc()).limit(1))


def drift_history(session: Session, adapter_id: int, version: int, n: int) -> list[bool | None]:
    """Drift outcomes of the last ``n`` windows tested against ``version``, oldest first."""
    rows = session.scalars(
        select(MonitorReport.drifted)
        .where(MonitorReport.adapter_id == adapter_id, MonitorReport.version == version,
               MonitorReport.new_window.is_(True))
        .order_by(MonitorReport.id.desc()).limit(n)).all()
    return list(reversed(rows))


# -- retrain runs -----------------------------------------------------------------------------


def new_run_id() -> str:
    return f"rtrun-{uuid.uuid4().hex[:24]}"


def add_run(session: Session, **fields: Any) -> RetrainRun:
    row = RetrainRun(id=new_run_id(), **fields)
    session.add(row)
    session.flush()
    return row


def list_runs(session: Session, adapter_id: int, *, status: RetrainRunStatus | None = None,
              limit: int = 20) -> list[RetrainRun]:
    """Newest first."""
    stmt = select(RetrainRun).where(RetrainRun.adapter_id == adapter_id)
    if status is not None:
        stmt = stmt.where(RetrainRun.status == str(status))
    return list(session.scalars(stmt.order_by(RetrainRun.created_at.desc(), RetrainRun.id)
                                .limit(limit)))


def promoted_run(session: Session, adapter_id: int, version: int) -> RetrainRun | None:
    """The run whose promotion made ``version`` the champion, if the monitor promoted it."""
    return session.scalar(
        select(RetrainRun)
        .where(RetrainRun.adapter_id == adapter_id, RetrainRun.candidate_version == version,
               RetrainRun.status == str(RetrainRunStatus.PROMOTED))
        .order_by(RetrainRun.promoted_at.desc()).limit(1))


def last_training_started(session: Session, adapter: Adapter) -> datetime | None:
    """When the newest training of this adapter started: a monitor run (on the monitor's clock)
    or a fine-tuning job created through the API."""
    run = session.scalar(select(func.max(RetrainRun.created_at))
                         .where(RetrainRun.adapter_id == adapter.id))
    monitor_jobs = select(RetrainRun.job_id).where(RetrainRun.adapter_id == adapter.id,
                                                   RetrainRun.job_id.is_not(None))
    job = session.scalar(select(func.max(FineTuningJob.created_at)).where(
        FineTuningJob.tenant_id == adapter.tenant_id,
        FineTuningJob.adapter_name == adapter.name, FineTuningJob.id.not_in(monitor_jobs)))
    times = [as_utc(t) for t in (run, job) if t is not None]
    return max(times) if times else None


def active_jobs(session: Session, adapter: Adapter) -> tuple[bool, int, int]:
    """(a job of this adapter is active, the tenant's active jobs, all active jobs)."""
    active = FineTuningJob.status.in_([s.value for s in ACTIVE])
    total = int(session.scalar(select(func.count()).select_from(FineTuningJob).where(active)) or 0)
    tenant = int(session.scalar(select(func.count()).select_from(FineTuningJob).where(
        active, FineTuningJob.tenant_id == adapter.tenant_id)) or 0)
    mine = int(session.scalar(select(func.count()).select_from(FineTuningJob).where(
        active, FineTuningJob.tenant_id == adapter.tenant_id,
        FineTuningJob.adapter_name == adapter.name)) or 0)
    return mine > 0, tenant, total
