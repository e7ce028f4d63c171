"""Offboarding a tenant (training/deletion.py) on SQLite and PostgreSQL: its unfinished jobs
are cancelled first; one still running keeps the tenant (disabled) until its run stopped."""

from __future__ import annotations

import pytest

from services.errors import Conflict
from services.store.models import FineTuningJob, JobStatus, Tenant, TenantState
from services.tenants import create_key, create_tenant, get_tenant
from training.deletion import offboard_tenant
from training.jobs.store import now


def _job(session, tenant_id: int, job_id: str, status: JobStatus) -> None:
    session.add(FineTuningJob(
        id=job_id, tenant_id=tenant_id, status=status, model="base", adapter_name="bot",
        task="chat", training_file="file-gone", run_name=job_id, runner="local",
        owner="another-process" if status is JobStatus.RUNNING else None,
        heartbeat_at=now() if status is JobStatus.RUNNING else None))


def test_offboarding_cancels_jobs_and_waits_for_a_running_one(api_platform):
    p = api_platform
    with p.store.write() as s:
        tenant = create_tenant(s, "acme")
        create_key(s, "acme")
        _job(s, tenant.id, "ftjob-queued", JobStatus.QUEUED)
        _job(s, tenant.id, "ftjob-paused", JobStatus.PAUSED)
        _job(s, tenant.id, "ftjob-running", JobStatus.RUNNING)
    with pytest.raises(Conflict, match="ftjob-running.*retry the delete"):
        offboard_tenant(p, "acme", wait_s=0.3, poll_s=0.05)
    with p.store.read() as s:
        assert get_tenant(s, "acme").state == TenantState.DISABLED  # its keys stop working
        jobs = {j.id: j for j in s.query(FineTuningJob)}
    assert jobs["ftjob-queued"].status == jobs["ftjob-paused"].status == JobStatus.CANCELLED
    assert jobs["ftjob-running"].cancel_requested

    with p.store.write() as s:  # its owner stops the run
        s.get_one(FineTuningJob, "ftjob-running").status = JobStatus.CANCELLED
    flushed = []
    removed = offboard_tenant(p, "acme", wait_s=0.3, before=lambda: flushed.append(True))
    assert flushed == [True]
    assert removed.rows["fine_tuning_jobs"] == 3 and removed.rows["api_keys"] == 1
    assert sorted(removed.job_ids) == ["ftjob-paused", "ftjob-queued", "ftjob-running"]
    with p.store.read() as s:
        assert s.query(Tenant).count() == 0 and s.query(FineTuningJob).count() == 0
