"""Deletes that really delete, end to end: the store's rows (:mod:`services.deletion`) in one
transaction, then, after it committed, the blobs nothing references any more
(:mod:`services.artifact_gc`) and the workspaces of the deleted jobs (checkpoints included).

The HTTP routes and the CLI call these; they also make the engines stop serving the deleted
versions (``Removed.engine_names``), which is the gateway's part.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from services import deletion
from services.artifact_gc import collect
from services.deletion import Removed
from services.errors import Conflict
from services.platform import Platform
from services.store.models import FineTuningJob, Tenant, TenantState
from services.tenants import get_tenant
from training.jobs import store as job_store
from training.jobs.workspace import JobWorkspace

log = logging.getLogger("tuneloop.deletion")


def clean_up(platform: Platform, removed: Removed) -> Removed:
    """After the delete committed: collect its blobs, delete its jobs' workspaces."""
    collect(platform.store, platform.artifacts, removed.artifact_keys)
    for job_id in removed.job_ids:
        try:
            JobWorkspace.of(platform.settings.resolved_artifacts_url, job_id).delete()
        except (OSError, ValueError) as exc:
            log.warning("the workspace of deleted job %s could not be deleted: %s", job_id, exc)
    return removed


def delete_file(platform: Platform, tenant: Tenant, file_id: str) -> Removed:
    """``DELETE /v1/files/{id}`` (see :func:`services.deletion.delete_file`)."""
    with platform.store.write() as session:
        removed = deletion.delete_file(session, tenant, file_id)
    return clean_up(platform, removed)


def delete_version(platform: Platform, tenant: Tenant, name: str, version: int) -> Removed:
    """``DELETE /v1/models/{name@vN}`` (see :func:`services.deletion.delete_version`)."""
    with platform.store.write() as session:
        removed = deletion.delete_version(session, tenant, name, version)
    return clean_up(platform, removed)


def delete_adapter(platform: Platform, tenant: Tenant, name: str,
                   before: Callable[[], object] | None = None) -> Removed:
    """``DELETE /v1/adapters/{name}`` (see :func:`services.deletion.delete_adapter`).
    ``before`` runs first (the gateway writes its buffered request log, so it is deleted too)."""
    if before is not None:
        before()
    with platform.store.write() as session:
        removed = deletion.delete_adapter(session, tenant, name)
    return clean_up(platform, removed)


def _unfinished(platform: Platform, tenant_id: int) -> list[FineTuningJob]:
    with platform.store.read() as session:
        return list(session.scalars(deletion.active_jobs_query(tenant_id)))


def offboard_tenant(platform: Platform, name: str, *, wait_s: float = 30.0,
                    poll_s: float = 0.25, before: Callable[[], object] | None = None) -> Removed:
    """Delete tenant ``name`` and everything of it (see :func:`services.deletion.delete_tenant`).

    First the tenant is disabled (its keys stop working, its queued jobs are not started) and
    its unfinished jobs are cancelled; running ones stop within a few seconds, waited for up to
    ``wait_s``. If one is still running then, Conflict says to retry (the tenant stays
    disabled). ``before`` runs just before the rows are deleted (the request log's flush)."""
    with platform.store.write() as session:
        tenant = get_tenant(session, name)
        tenant.state = TenantState.DISABLED
        tenant_id = tenant.id
        for job in session.scalars(deletion.active_jobs_query(tenant_id)).all():
            try:
                job_store.request_cancel(session, tenant, job.id)
            except Conflict:  # it finished meanwhile
                pass
    deadline = time.monotonic() + wait_s
    while still := _unfinished(platform, tenant_id):
        if time.monotonic() >= deadline:
            ids = ", ".join(j.id for j in still[:5])
            raise Conflict(f"tenant {name!r} is disabled and its fine-tuning jobs ({ids}) are "
                           "being cancelled; retry the delete in a few seconds",
                           code="tenant_in_use")
        time.sleep(poll_s)
    if before is not None:
        before()
    with platform.store.write() as session:
        removed = deletion.delete_tenant(session, get_tenant(session, name))
    return clean_up(platform, removed)
