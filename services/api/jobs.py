"""Fine-tuning jobs API (OpenAI shape): create, list, show, events, checkpoints, cancel.

Jobs run in the background: :func:`install` adds these routes and a startup hook that runs a
:class:`training.jobs.manager.JobManager` (one job at a time) for as long as the app runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool

from services import registry
from services.api import files as files_api
from services.api.deps import current_tenant, platform
from services.api.schemas_jobs import CheckpointOut, EventOut, JobCreate, JobOut, Page
from services.errors import InvalidInput, NotFound
from services.store.models import FineTuningCheckpoint, FineTuningEvent, FineTuningJob, Tenant
from training.jobs import store
from training.jobs.intake import create_job
from training.jobs.manager import JobManager
from training.jobs.parity import GatewayEngine
from training.jobs.store import unix

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def job_out(job: FineTuningJob, tenant_name: str) -> JobOut:
    hp = dict(job.hyperparameters or {})
    eta = (job.progress or {}).get("eta_s")
    finish = None
    if eta is not None and job.heartbeat_at is not None and job.status == "running":
        finish = unix(job.heartbeat_at) + int(eta)
    return JobOut(
        id=job.id, created_at=unix(job.created_at), error=job.error,
        fine_tuned_model=job.fine_tuned_model, finished_at=unix(job.finished_at),
        hyperparameters=hp, model=job.model, organization_id=tenant_name, seed=job.seed,
        status=job.status, trained_tokens=job.trained_tokens, training_file=job.training_file,
        validation_file=job.validation_file, estimated_finish=finish,
        method={"type": "supervised", "supervised": {"hyperparameters": hp}},
        suffix=job.adapter_name, task=job.task, labels=job.labels,
        prompt_template=job.prompt_template, auto_promote=job.auto_promote,
        cancel_requested=job.cancel_requested, progress=job.progress or {},
    )


def event_out(event: FineTuningEvent) -> EventOut:
    return EventOut(id=f"ftevent-{event.id}", created_at=unix(event.created_at),
                    level=event.level, message=event.message, type=event.type, data=event.data)


def checkpoint_out(row: FineTuningCheckpoint) -> CheckpointOut:
    return CheckpointOut(id=row.id, created_at=unix(row.created_at),
                         fine_tuned_model_checkpoint=f"{row.job_id}:ckpt-step-{row.step}",
                         fine_tuning_job_id=row.job_id, metrics=row.metrics or {},
                         step_number=row.step)


def _hyperparameters(body: JobCreate) -> dict | None:
    if body.method is None:
        return body.hyperparameters
    kind = body.method.get("type", "supervised")
    if kind != "supervised":
        raise InvalidInput(f"method.type {kind!r} is not supported; use 'supervised'",
                           param="method")
    nested = (body.method.get("supervised") or {}).get("hyperparameters") or {}
    return {**nested, **(body.hyperparameters or {})}


@router.post("")
async def create(body: JobCreate, request: Request,
                 tenant: Tenant = Depends(current_tenant)) -> JobOut:
    p = platform(request)
    job = await run_in_threadpool(
        create_job, p, tenant, model=body.model, training_file=body.training_file,
        validation_file=body.validation_file, suffix=body.suffix,
        hyperparameters=_hyperparameters(body), task=body.task, labels=body.labels,
        prompt_template=body.prompt_template, auto_promote=body.auto_promote, seed=body.seed)
    manager = getattr(request.app.state, "jobs", None)
    if manager is not None:
        manager.wake()
    return job_out(job, tenant.name)


@router.get("")
def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
              tenant: Tenant = Depends(current_tenant)) -> Page:
    with platform(request).store.read() as session:
        rows, more = store.list_jobs(session, tenant, after=after, limit=limit)
        return Page(data=[job_out(r, tenant.name) for r in rows], has_more=more)


@router.get("/{job_id}")
def show(job_id: str, request: Request, tenant: Tenant = Depends(current_tenant)) -> JobOut:
    with platform(request).store.read() as session:
        return job_out(store.get_job(session, tenant, job_id), tenant.name)


def _event_cursor(after: str | None) -> int | None:
    if after is None:
        return None
    raw = after.removeprefix("ftevent-")
    if not raw.isdigit():
        raise InvalidInput(f"after={after!r} is not an event id (ftevent-N)", param="after")
    return int(raw)


@router.get("/{job_id}/events")
def events(job_id: str, request: Request, after: str | None = None,
           limit: int = Query(20, ge=1, le=1000),
           order: str = Query("desc", pattern="^(asc|desc)$"),
           tenant: Tenant = Depends(current_tenant)) -> Page:
    """Newest first like OpenAI (``after``: older than that event); ``order=asc`` gives the
    events after ``after`` oldest first (for following a job)."""
    with platform(request).store.read() as session:
        store.get_job(session, tenant, job_id)
        rows, more = store.list_events(session, job_id, after=_event_cursor(after), limit=limit,
                                       oldest_first=order == "asc")
        return Page(data=[event_out(e) for e in rows], has_more=more)


@router.get("/{job_id}/checkpoints")
def checkpoints(job_id: str, request: Request, after: str | None = None,
                limit: int = Query(10, ge=1, le=100),
                tenant: Tenant = Depends(current_tenant)) -> Page:
    with platform(request).store.read() as session:
        store.get_job(session, tenant, job_id)
        rows, more = store.list_checkpoints(session, job_id, after=after, limit=limit)
        return Page(data=[checkpoint_out(c) for c in rows], has_more=more)


@router.post("/{job_id}/cancel")
async def cancel(job_id: str, request: Request, tenant: Tenant = Depends(current_tenant)
                 ) -> JobOut:
    """A job that has not started is cancelled at once; a running one is stopped by its job
    manager within a few seconds (``cancel_requested`` is true until then)."""
    p = platform(request)

    def _do() -> FineTuningJob:
        with p.store.write() as session:
            return store.request_cancel(session, tenant, job_id)

    job = await run_in_threadpool(_do)
    return job_out(job, tenant.name)


def _promote_hook(app: FastAPI, loop: asyncio.AbstractEventLoop):
    """auto_promote through the serving gateway's hot swap when it runs in this app."""

    def promote(tenant: Tenant, name: str, version: int) -> None:
        p = app.state.platform
        swapper = getattr(app.state, "swapper", None)
        ref = registry.version_ref(name, version)
        previous = None
        if swapper is not None:
            with p.store.read() as session:
                new = registry.resolve(session, tenant, ref)
                try:
                    old = registry.resolve(session, tenant, name)
                except NotFound:
                    old = None
            asyncio.run_coroutine_threadsafe(swapper.prepare(new), loop).result(timeout=600)
            previous = old if old is not None and old.version_id != new.version_id else None
        with p.store.write() as session:
            registry.promote(session, tenant, name, version, "auto_promote by a fine-tuning job")
        if swapper is not None:
            loop.call_soon_threadsafe(swapper.switched, tenant.id, previous)

    return promote


def _dispatcher(app: FastAPI):
    def find():  # serving's Dispatcher, or None when this app serves nothing
        gateway = getattr(app.state, "gateway", None)
        return getattr(gateway, "dispatch", None)

    return find


@asynccontextmanager
async def _jobs_lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Tests (and embedders) may set app.state.job_manager_options, e.g. {"runner": ...} or
    # {"concurrency": 0} for a manager that validates jobs but runs none.
    settings = app.state.platform.settings
    loop = asyncio.get_running_loop()
    options = {"promote_hook": _promote_hook(app, loop),
               # parity checks run on the gateway's engines when this app serves (looked up
               # at check time: the gateway starts after the job manager)
               "parity_engine": GatewayEngine(_dispatcher(app), loop),
               "concurrency": settings.train_concurrency,
               "stale_after_s": settings.train_job_stale_after_s,
               **getattr(app.state, "job_manager_options", {})}
    manager = JobManager(app.state.platform, **options)
    async with manager.lifespan(app):
        yield


def install(app: FastAPI) -> None:
    """Add the files and jobs routes and run a job manager while the app runs."""
    app.include_router(files_api.router)
    app.include_router(router)
    app.state.startup_hooks.append(_jobs_lifespan)
