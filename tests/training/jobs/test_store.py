"""Claiming takes tenants in turn and skips disabled tenants (training/jobs/store.py:next_job)."""

from __future__ import annotations

import pytest

from services.store.models import JobStatus, TenantState
from services.tenants import create_tenant, get_tenant, set_tenant_state
from tests.support.api import chat_lines
from training.jobs import store
from training.jobs.files import store_file
from training.jobs.intake import JobRequest, create_job
from training.jobs.manager import JobManager


def queued_job(platform, tenant):  # noqa: ANN001, ANN201
    data = chat_lines()
    file = store_file(platform, tenant, data, "train.jsonl")
    job = create_job(platform, tenant, JobRequest(model="base", training_file=file.id))
    with platform.store.write() as session:
        store.transition(session, store.get_job(session, None, job.id), JobStatus.QUEUED)
    return job


def test_a_flooding_tenant_waits_behind_one_job_of_every_other_tenant(platform):
    platform.settings = platform.settings.model_copy(update={"train_max_active_jobs_per_tenant": 8})
    with platform.store.write() as session:
        for name in ("flood", "quiet", "gone"):
            create_tenant(session, name)
    with platform.store.read() as session:
        flood, quiet, gone = (get_tenant(session, n) for n in ("flood", "quiet", "gone"))
    floods = [queued_job(platform, flood) for _ in range(5)]
    quiet_job = queued_job(platform, quiet)
    gone_job = queued_job(platform, gone)
    with platform.store.write() as session:
        set_tenant_state(session, "gone", TenantState.DISABLED)
    manager = JobManager(platform, concurrency=0)

    def claim_and_finish() -> str:
        job = manager.claim()
        assert job is not None
        with platform.store.write() as session:
            store.transition(session, store.get_job(session, None, job.id), JobStatus.SUCCEEDED)
        return job.id

    order = [claim_and_finish() for _ in range(6)]
    # FIFO would run all five flood jobs first; the quiet tenant's job is second.
    assert order[:2] == [floods[0].id, quiet_job.id]
    assert order[2:] == [j.id for j in floods[1:]]
    assert manager.claim() is None  # the disabled tenant's job is not run
    with platform.store.read() as session:
        assert store.get_job(session, None, gone_job.id).status == JobStatus.QUEUED


def test_active_jobs_are_bounded_per_tenant_and_in_total(platform):
    from services.errors import RateLimited

    platform.settings = platform.settings.model_copy(
        update={"train_max_active_jobs_per_tenant": 2, "train_max_active_jobs": 3})
    with platform.store.write() as session:
        for name in ("a", "b"):
            create_tenant(session, name)
    with platform.store.read() as session:
        a, b = get_tenant(session, "a"), get_tenant(session, "b")
    queued_job(platform, a)
    queued_job(platform, a)
    with pytest.raises(RateLimited, match="TUNELOOP_TRAIN_MAX_ACTIVE_JOBS_PER_TENANT"):
        queued_job(platform, a)
    queued_job(platform, b)  # another tenant still gets its turn
    with pytest.raises(RateLimited, match="3 fine-tuning jobs are already queued"):
        queued_job(platform, b)


@pytest.mark.postgres
def test_a_cancel_that_races_the_file_validation_still_cancels(make_settings, postgres_url):
    """The validator queues the job between the cancel's read and its write: the cancel reads
    the job again and cancels it queued (it answered 400 "changed state meanwhile")."""
    from services.platform import Platform

    platform = Platform.open(make_settings(database_url=postgres_url))
    try:
        with platform.store.write() as session:
            tenant = create_tenant(session, "acme")
        file = store_file(platform, tenant, chat_lines(), "train.jsonl")
        job = create_job(platform, tenant, JobRequest(model="base", training_file=file.id))
        with platform.store.write() as cancelling:
            stale = store.get_job(cancelling, tenant, job.id)  # read: validating_files
            assert stale.status == JobStatus.VALIDATING_FILES
            with platform.store.write() as validator:  # commits first
                store.transition(validator, store.get_job(validator, None, job.id),
                                 JobStatus.QUEUED)
            cancelled = store.request_cancel(cancelling, tenant, job.id)
            assert cancelled.status == JobStatus.CANCELLED
        with platform.store.read() as session:
            assert store.get_job(session, None, job.id).status == JobStatus.CANCELLED
    finally:
        platform.close()


@pytest.mark.postgres
def test_a_pause_that_races_a_claim_asks_the_run_to_stop(make_settings, postgres_url):
    from services.platform import Platform

    platform = Platform.open(make_settings(database_url=postgres_url))
    try:
        with platform.store.write() as session:
            tenant = create_tenant(session, "acme")
        job = queued_job(platform, tenant)
        with platform.store.write() as pausing:
            assert store.get_job(pausing, tenant, job.id).status == JobStatus.QUEUED
            assert JobManager(platform, concurrency=0).claim(job.id) is not None  # commits
            paused = store.request_pause(pausing, tenant, job.id)
            assert paused.status == JobStatus.RUNNING and paused.pause_requested
    finally:
        platform.close()
