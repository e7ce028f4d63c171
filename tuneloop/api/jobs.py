"""Fine-tuning jobs API (OpenAI shape): create, list, show, events, checkpoints, cancel.

Jobs run in the background, in the app's :class:`training.jobs.manager.JobManager`
(:mod:`tuneloop.state`); creating one wakes it.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.errors import Conflict, InvalidInput
from services.store.models import FineTuningCheckpoint, FineTuningEvent, FineTuningJob, Tenant
from training.jobs import store
from training.jobs.intake import JobRequest, check_metadata, create_job
from training.jobs.store import unix
from tuneloop.api.deps import app_state, current_tenant, platform
from tuneloop.api.schemas_jobs import CheckpointOut, EventOut, JobCreate, JobOut, Page

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
        cancel_requested=job.cancel_requested, pause_requested=job.pause_requested,
        progress=job.progress or {}, result_files=list(job.result_files or []),
        metadata=job.job_metadata,
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
    if body.integrations:
        raise InvalidInput("integrations (Weights & Biases, ...) are not supported; remove the "
                           "field and follow the job's events and metrics instead",
                           param="integrations")
    job = await run_in_threadpool(
        create_job, p, tenant, JobRequest(
            model=body.model, training_file=body.training_file,
            validation_file=body.validation_file, suffix=body.suffix,
            hyperparameters=_hyperparameters(body), task=body.task, labels=body.labels,
            prompt_template=body.prompt_template, auto_promote=body.auto_promote,
            seed=body.seed, metadata=body.metadata))
    app_state(request).jobs.wake()
    return job_out(job, tenant.name)


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """``metadata[key]=value`` query parameters (what the openai SDK sends for
    ``jobs.list(metadata={...})``)."""
    pairs = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
             if k.startswith("metadata[") and k.endswith("]")}
    return check_metadata(pairs) if pairs else None


@router.get("")
def list_jobs(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
              tenant: Tenant = Depends(current_tenant)) -> Page:
    """Newest first; ``metadata[key]=value`` keeps the jobs with that pair (repeatable)."""
    with platform(request).store.read() as session:
        rows, more = store.list_jobs(session, tenant, after=after, limit=limit,
                                     metadata=_metadata_filter(request))
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
            try:
                return store.request_cancel(session, tenant, job_id)
            except Conflict as exc:  # finished: a 400 (the openai SDK retries 409s)
                raise InvalidInput(exc.message, code="job_not_cancellable") from exc

    job = await run_in_threadpool(_do)
    return job_out(job, tenant.name)


def _state_change(change: Callable[[Session, Tenant, str], FineTuningJob]) -> Callable:
    async def route(job_id: str, request: Request,
                    tenant: Tenant = Depends(current_tenant)) -> JobOut:
        p = platform(request)

        def _do() -> FineTuningJob:
            with p.store.write() as session:
                try:
                    return change(session, tenant, job_id)
                except Conflict as exc:  # a 400: the openai SDK retries 409s
                    raise InvalidInput(exc.message, code="invalid_job_state") from exc

        job = await run_in_threadpool(_do)
        app_state(request).jobs.wake()
        return job_out(job, tenant.name)

    return route


router.post("/{job_id}/pause", summary="Pause a job (OpenAI jobs.pause)")(
    _state_change(store.request_pause))
router.post("/{job_id}/resume", summary="Resume a paused job (OpenAI jobs.resume)")(
    _state_change(store.resume))
