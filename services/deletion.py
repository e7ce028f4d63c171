"""Deletes in the store: a dataset file, an adapter version, an adapter, a tenant, each with
every row that belongs to it (foreign keys first). Deleted means deleted: no tombstones.

Each function runs in the caller's write transaction, refuses (Conflict, the message says what
to do) while the object is in use, and returns a :class:`Removed` naming what the caller cleans
after the commit: the artifact keys to garbage-collect (services/artifact_gc.py), the deleted
jobs (their workspaces in the artifact store) and the engine-side adapter names to unload.
Rows of another tenant are NotFound, like missing ones. Tenants, keys, adapters and versions
are deleted through the ORM, so the serving change counter moves (services/store/changes.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, Select, delete, func, or_, select, update
from sqlalchemy.orm import Session

from services import registry
from services.errors import Conflict, NotFound
from services.store.models import (
    AdapterVersion,
    ApiKey,
    ChampionChange,
    DatasetFile,
    FeedbackRecord,
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
    JobStatus,
    MonitorEvent,
    MonitorReport,
    RequestRecord,
    RetrainPolicyRecord,
    RetrainRun,
    Tenant,
    VersionState,
)

ACTIVE_JOB = [s.value for s in JobStatus if not s.is_terminal]


@dataclass
class Removed:
    """What a delete took out of the store; ``rows`` counts deleted rows per table."""

    artifact_keys: set[str] = field(default_factory=set)
    job_ids: list[str] = field(default_factory=list)
    engine_names: list[str] = field(default_factory=list)
    rows: Counter[str] = field(default_factory=Counter)

    def add(self, other: Removed) -> None:
        self.artifact_keys |= other.artifact_keys
        self.job_ids += other.job_ids
        self.engine_names += other.engine_names
        self.rows.update(other.rows)


def _run(session: Session, removed: Removed, model: Any, *conditions: Any) -> None:
    """Delete the rows of ``model`` matching ``conditions`` in one statement, counted."""
    result = cast("CursorResult[Any]", session.execute(delete(model).where(*conditions)))
    removed.rows[model.__tablename__] += max(result.rowcount, 0)


def _orm_delete(session: Session, removed: Removed, rows: Collection[Any]) -> None:
    for row in rows:
        session.delete(row)
        removed.rows[row.__tablename__] += 1
    session.flush()


def active_jobs_query(tenant_id: int) -> Select[FineTuningJob]:
    """The tenant's jobs that are not finished (paused ones included), oldest first."""
    return (select(FineTuningJob)
            .where(FineTuningJob.tenant_id == tenant_id, FineTuningJob.status.in_(ACTIVE_JOB))
            .order_by(FineTuningJob.created_at, FineTuningJob.id))


def active_job(session: Session, tenant: Tenant, *conditions: Any) -> FineTuningJob | None:
    """The tenant's oldest unfinished job matching any of ``conditions`` (any job without)."""
    stmt = active_jobs_query(tenant.id)
    if conditions:
        stmt = stmt.where(or_(*conditions))
    return session.scalar(stmt.limit(1))


def _file_job(session: Session, tenant: Tenant, file_id: str) -> FineTuningJob | None:
    return active_job(session, tenant, FineTuningJob.training_file == file_id,
                      FineTuningJob.validation_file == file_id)


# -- files -------------------------------------------------------------------------------------


def delete_file(session: Session, tenant: Tenant, file_id: str) -> Removed:
    """Delete the tenant's dataset or job result file; refused while a job that is not finished
    uses it. Jobs and retrain runs that used it (or published it) keep its id."""
    row = session.get(DatasetFile, file_id, with_for_update=True) \
        if isinstance(file_id, str) else None
    if row is None or row.tenant_id != tenant.id:
        raise NotFound(f"file {file_id!r} does not exist", param="file_id",
                       code="file_not_found")
    job = _file_job(session, tenant, row.id)
    if job is not None:
        raise Conflict(f"file {row.id} is used by fine-tuning job {job.id} ({job.status}); "
                       "cancel the job or wait for it to finish, then delete the file",
                       code="file_in_use")
    removed = Removed(artifact_keys={row.sha256})
    _orm_delete(session, removed, [row])
    return removed


# -- adapter versions --------------------------------------------------------------------------


def _forget_versions(session: Session, version_ids: list[int]) -> None:
    """Drop what points at these versions: champion history naming them, jobs' links."""
    if not version_ids:
        return
    session.execute(update(ChampionChange).where(ChampionChange.from_version_id.in_(version_ids))
                    .values(from_version_id=None))
    session.execute(delete(ChampionChange).where(ChampionChange.to_version_id.in_(version_ids)))
    # A finished job keeps its fine_tuned_model name; its links to the version go.
    session.execute(update(FineTuningJob).where(FineTuningJob.parent_version_id.in_(version_ids))
                    .values(parent_version_id=None))
    session.execute(update(FineTuningJob).where(FineTuningJob.result_version_id.in_(version_ids))
                    .values(result_version_id=None))


def delete_version(session: Session, tenant: Tenant, name: str, version: int) -> Removed:
    """Delete ``name@vN``. Refused while it is the champion or the rollback target, while it
    is pending (its checks run) and while a job of the adapter is not finished."""
    adapter = registry.get_adapter(session, tenant, name, lock=True)
    row = registry.get_version(session, tenant, name, version)
    ref = registry.version_ref(name, version)
    if adapter.champion_version_id == row.id:
        raise Conflict(f"{ref} is the champion of {name!r}; promote another version first "
                       f"(or delete the whole adapter {name!r})", code="model_in_use")
    try:
        target = registry.rollback_target(session, tenant, name)
    except Conflict:
        target = None
    if target is not None and target.id == row.id:
        raise Conflict(f"{ref} is the rollback target of {name!r} (its previous champion); "
                       "promote another version first", code="model_in_use")
    if row.state == VersionState.PENDING:
        raise Conflict(f"{ref} is pending (its checks are running); delete it once it is "
                       "ready or failed", code="model_in_use")
    job = active_job(session, tenant, FineTuningJob.adapter_name == name,
                     FineTuningJob.parent_version_id == row.id)
    if job is not None:
        raise Conflict(f"fine-tuning job {job.id} ({job.status}) uses adapter {name!r}; cancel "
                       f"it or wait for it to finish, then delete {ref}", code="model_in_use")
    latest = session.scalar(select(func.max(AdapterVersion.version))
                            .where(AdapterVersion.adapter_id == adapter.id)) or 0
    adapter.last_version = max(adapter.last_version or 0, latest)
    _forget_versions(session, [row.id])
    removed = Removed(artifact_keys={row.artifact_key},
                      engine_names=[registry.engine_adapter_name(tenant.name, name, version)])
    _orm_delete(session, removed, [row])
    return removed


# -- adapters ----------------------------------------------------------------------------------


def _job_result_files(session: Session, job_ids: list[str]) -> list[DatasetFile]:
    """The result files (``fine_tuning_jobs.result_files``) of these jobs that still exist."""
    named = {(tenant_id, file_id) for tenant_id, ids in session.execute(
        select(FineTuningJob.tenant_id, FineTuningJob.result_files)
        .where(FineTuningJob.id.in_(job_ids))) for file_id in ids or ()}
    if not named:
        return []
    rows = session.scalars(select(DatasetFile).where(
        DatasetFile.id.in_(sorted({file_id for _, file_id in named}))))
    return [row for row in rows if (row.tenant_id, row.id) in named]


def _delete_jobs(session: Session, removed: Removed, job_ids: list[str]) -> None:
    """Delete the jobs with their events, checkpoints, retrain runs and result files."""
    if not job_ids:
        return
    results = _job_result_files(session, job_ids)
    if results:
        removed.artifact_keys |= {row.sha256 for row in results}
        _run(session, removed, DatasetFile, DatasetFile.id.in_([row.id for row in results]))
    _run(session, removed, RetrainRun, RetrainRun.job_id.in_(job_ids))
    _run(session, removed, FineTuningEvent, FineTuningEvent.job_id.in_(job_ids))
    _run(session, removed, FineTuningCheckpoint, FineTuningCheckpoint.job_id.in_(job_ids))
    _run(session, removed, FineTuningJob, FineTuningJob.id.in_(job_ids))
    removed.job_ids += job_ids


def _delete_runs(session: Session, removed: Removed, *conditions: Any) -> set[str]:
    """Delete the retrain runs matching ``conditions``; returns the files they compiled."""
    runs = list(session.scalars(select(RetrainRun).where(*conditions)))
    files: set[str] = set()
    for run in runs:
        files |= {run.training_file, run.validation_file}
        lineage = (run.dataset or {}).get("lineage_key")
        if isinstance(lineage, str):
            removed.artifact_keys.add(lineage)
    if runs:
        _run(session, removed, RetrainRun, RetrainRun.id.in_([r.id for r in runs]))
    return files


def _delete_compiled_files(session: Session, removed: Removed, tenant: Tenant,
                           file_ids: set[str]) -> None:
    """The monitor's datasets of a deleted adapter (made from its request log and feedback),
    unless a job that is not finished or another adapter's retrain run still uses one."""
    for file_id in sorted(file_ids):
        row = session.get(DatasetFile, file_id)
        if row is None or row.tenant_id != tenant.id or _file_job(session, tenant, file_id):
            continue
        if session.scalar(select(RetrainRun.id).where(or_(
                RetrainRun.training_file == file_id, RetrainRun.validation_file == file_id))
                .limit(1)):
            continue
        removed.artifact_keys.add(row.sha256)
        _orm_delete(session, removed, [row])


def delete_adapter(session: Session, tenant: Tenant, name: str) -> Removed:
    """Delete an adapter with all its versions, the jobs that trained it (events, checkpoints,
    result files), its retrain policy, monitor reports, events and runs (and the datasets those
    compiled), and its request log and feedback. Refused while one of its jobs is not finished,
    or a job warm-starts from one of its versions."""
    adapter = registry.get_adapter(session, tenant, name, lock=True)
    versions = registry.list_versions(session, adapter)
    version_ids = [v.id for v in versions]
    conditions = [FineTuningJob.adapter_name == name]
    if version_ids:
        conditions.append(FineTuningJob.parent_version_id.in_(version_ids))
    job = active_job(session, tenant, *conditions)
    if job is not None:
        raise Conflict(f"fine-tuning job {job.id} ({job.status}) uses adapter {name!r}; cancel "
                       "it or wait for it to finish, then delete the adapter", code="adapter_in_use")
    removed = Removed()
    compiled = _delete_runs(session, removed, RetrainRun.adapter_id == adapter.id)
    job_ids = list(session.scalars(select(FineTuningJob.id).where(
        FineTuningJob.tenant_id == tenant.id, FineTuningJob.adapter_name == name)))
    _delete_jobs(session, removed, job_ids)
    for model in (MonitorEvent, MonitorReport, RetrainPolicyRecord):
        _run(session, removed, model, model.adapter_id == adapter.id)
    _run(session, removed, FeedbackRecord,
         FeedbackRecord.tenant_id == tenant.id, FeedbackRecord.adapter == name)
    _run(session, removed, RequestRecord,
         RequestRecord.tenant_id == tenant.id, RequestRecord.adapter == name)
    _forget_versions(session, version_ids)
    _run(session, removed, ChampionChange, ChampionChange.adapter_id == adapter.id)
    adapter.champion_version_id = None
    session.flush()  # the champion pointer goes before the versions it points at
    removed.artifact_keys |= {v.artifact_key for v in versions}
    removed.engine_names += [registry.engine_adapter_name(tenant.name, name, v.version)
                             for v in versions]
    _orm_delete(session, removed, versions)
    _orm_delete(session, removed, [adapter])
    _delete_compiled_files(session, removed, tenant, compiled)
    return removed


# -- tenants -----------------------------------------------------------------------------------


def delete_tenant(session: Session, tenant: Tenant) -> Removed:
    """Delete the tenant and everything of it: adapters (as :func:`delete_adapter`), jobs,
    files, request log, feedback, API keys. Refused while one of its jobs is not finished
    (cancel them first: ``training.deletion.offboard_tenant`` does)."""
    job = active_job(session, tenant)
    if job is not None:
        raise Conflict(f"fine-tuning job {job.id} of tenant {tenant.name!r} is {job.status}; "
                       "cancel it first", code="tenant_in_use")
    removed = Removed()
    for adapter in registry.list_adapters(session, tenant):
        removed.add(delete_adapter(session, tenant, adapter.name))
    _delete_runs(session, removed, RetrainRun.tenant_id == tenant.id)
    _delete_jobs(session, removed, list(session.scalars(
        select(FineTuningJob.id).where(FineTuningJob.tenant_id == tenant.id))))
    files = list(session.scalars(select(DatasetFile).where(DatasetFile.tenant_id == tenant.id)))
    removed.artifact_keys |= {f.sha256 for f in files}
    _run(session, removed, DatasetFile, DatasetFile.tenant_id == tenant.id)
    for model in (FeedbackRecord, RequestRecord, RetrainPolicyRecord):
        _run(session, removed, model, model.tenant_id == tenant.id)
    _orm_delete(session, removed, list(session.scalars(
        select(ApiKey).where(ApiKey.tenant_id == tenant.id))))
    _orm_delete(session, removed, [tenant])
    return removed
