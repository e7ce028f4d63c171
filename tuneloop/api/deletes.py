"""Deletes that really delete: ``DELETE /v1/files/{id}`` and ``DELETE /v1/models/{name@vN}``
(the openai SDK's ``files.delete`` / ``models.delete``), ``DELETE /v1/adapters/{name}``, and
for the admin ``DELETE /admin/tenants/{name}`` (offboarding). Tenant-scoped: another tenant's
object is 404 like a missing one.

Rows go from the store and blobs nothing references any more from the artifact store
(:mod:`training.deletion`); the engines stop serving deleted versions: this process unloads
them at once, other gateways drop their caches through the change counter. Refusals say what
to do first; on the SDK's routes they are 400s (the openai SDK retries 409s).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from services import registry
from services.deletion import Removed
from services.errors import Conflict, InvalidInput, NotFound
from services.store.models import Tenant
from training import deletion
from tuneloop.api.deps import app_state, current_tenant, platform, require_admin
from tuneloop.api.schemas import DeletedOut
from tuneloop.state import AppState

router = APIRouter(tags=["deletes"])
admin_router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)],
                         tags=["admin"])
T = TypeVar("T")


def _as_bad_request(work: Callable[[], T]) -> Callable[[], T]:
    """``work`` with its refusals (Conflict) as 400s: the openai SDK retries a 409."""

    def run() -> T:
        try:
            return work()
        except Conflict as exc:
            raise InvalidInput(exc.message, code=exc.code) from exc

    return run


def _flush_request_log(state: AppState) -> Callable[[], None]:
    """What runs before request-log rows are deleted: this process's buffered records are
    written first (so they are deleted too) and its key cache forgets disabled tenants."""

    def flush() -> None:
        state.keys.clear()
        if state.gateway is not None and state.gateway.request_log is not None:
            state.gateway.request_log.flush()

    return flush


def _stop_serving(state: AppState, removed: Removed) -> None:
    state.drop_caches()
    if state.gateway is not None and removed.engine_names:
        state.gateway.swap.remove(removed.engine_names)


@router.delete("/v1/files/{file_id}", response_model_exclude_none=True)
async def delete_file(file_id: str, request: Request,
                      tenant: Tenant = Depends(current_tenant)) -> DeletedOut:
    """Delete a dataset file and its content; refused while an unfinished job uses it."""
    p = platform(request)
    await run_in_threadpool(_as_bad_request(lambda: deletion.delete_file(p, tenant, file_id)))
    return DeletedOut(id=file_id, object="file")


@router.delete("/v1/models/{model_id:path}", response_model_exclude_none=True)
async def delete_model(model_id: str, request: Request,
                       tenant: Tenant = Depends(current_tenant)) -> DeletedOut:
    """Delete one fine-tuned version ``name@vN``; refused while it is the champion or the
    rollback target. The base model and an alias (``name``) delete nothing (400)."""
    state = app_state(request)
    p = state.platform
    if model_id == p.base_model_name:
        raise InvalidInput(f"{model_id!r} is the base model; it cannot be deleted (delete a "
                           "fine-tuned version, name@vN)", param="model",
                           code="model_not_deletable")
    try:
        name, version = registry.parse_model_ref(model_id)
    except InvalidInput as exc:  # not a ref at all: as unknown as any other name
        raise NotFound(f"model {model_id!r} does not exist", param="model",
                       code="model_not_found") from exc
    if version is None:
        with p.store.read() as session:
            registry.get_adapter(session, tenant, name)  # NotFound when there is none
        raise InvalidInput(f"{name!r} is an alias (it serves the champion) and deletes nothing; "
                           f"delete one version ({name}@vN) or the whole adapter "
                           f"(DELETE /v1/adapters/{name})", param="model", code="model_is_alias")
    removed = await run_in_threadpool(_as_bad_request(
        lambda: deletion.delete_version(p, tenant, name, version)))
    _stop_serving(state, removed)
    return DeletedOut(id=registry.version_ref(name, version), object="model")


@router.delete("/v1/adapters/{name}")
async def delete_adapter(name: str, request: Request,
                         tenant: Tenant = Depends(current_tenant)) -> DeletedOut:
    """Delete an adapter with all its versions, the jobs that trained it, its retrain policy,
    monitor reports and runs, request log and feedback; 409 while one of its jobs runs."""
    state = app_state(request)
    removed = await run_in_threadpool(deletion.delete_adapter, state.platform, tenant, name,
                                      before=_flush_request_log(state))
    _stop_serving(state, removed)
    return DeletedOut(id=name, object="adapter", rows=dict(removed.rows))


@admin_router.delete("/tenants/{tenant}")
async def offboard_tenant(tenant: str, request: Request) -> DeletedOut:
    """Delete a tenant and everything of it (keys, adapters, files, jobs, feedback, request
    log, artifacts). Its jobs are cancelled first; 409 (retry) while one is still stopping."""
    state = app_state(request)
    removed = await run_in_threadpool(deletion.offboard_tenant, state.platform, tenant,
                                      before=_flush_request_log(state))
    _stop_serving(state, removed)
    return DeletedOut(id=tenant, object="tenant", rows=dict(removed.rows))
