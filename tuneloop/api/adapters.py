"""Registry routes: list, show, register and export versions, promote, rollback
(tenant-scoped); deleting an adapter or a version is in :mod:`tuneloop.api.deletes`."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from services import registry
from services.adapter_export import open_export
from services.adapter_intake import register_adapter_archive
from services.errors import InvalidInput, TooLarge
from services.names import NameKind, check_name
from services.platform import Platform
from services.store.models import AdapterVersion, Tenant
from tuneloop.api.deps import app_state, current_tenant, platform
from tuneloop.api.json_input import parse_json
from tuneloop.api.schemas import (
    AdapterOut,
    ChampionChangeOut,
    ListOut,
    PromoteIn,
    RollbackIn,
    VersionOut,
)

router = APIRouter(prefix="/v1/adapters", tags=["adapters"])


def version_out(name: str, v: AdapterVersion, *, details: bool = True) -> VersionOut:
    """``details`` False: metrics and lineage left out (empty), for long lists."""
    return VersionOut(
        id=registry.version_ref(name, v.version), version=v.version, state=v.state, task=v.task,
        labels=v.labels, prompt_template=v.prompt_template, rank=v.rank, size_bytes=v.size_bytes,
        base_fingerprint=v.base_fingerprint, metrics=(v.metrics or {}) if details else {},
        lineage=(v.lineage or {}) if details else {}, failure=v.failure, created_at=v.created_at,
    )


def adapter_out(session, adapter, *, history: bool = False,  # noqa: ANN001
                versions: list[AdapterVersion] | None = None, details: bool = True) -> AdapterOut:
    if versions is None:
        versions = registry.list_versions(session, adapter)
    by_id = {v.id: v for v in versions}
    champion = by_id.get(adapter.champion_version_id)
    changes = []
    if history:
        changes = [
            ChampionChangeOut(
                action=c.action, from_version=by_id[c.from_version_id].version if c.from_version_id else None,
                to_version=by_id[c.to_version_id].version, reason=c.reason, created_at=c.created_at,
            )
            for c in registry.champion_history(session, adapter)
        ]
    return AdapterOut(
        id=adapter.name, name=adapter.name, task=adapter.task,
        champion=registry.version_ref(adapter.name, champion.version) if champion else None,
        champion_version=champion.version if champion else None,
        versions=[version_out(adapter.name, v, details=details) for v in versions],
        history=changes,
        created_at=adapter.created_at,
    )


@router.get("")
def list_adapters(request: Request, metrics: bool = True,
                  tenant: Tenant = Depends(current_tenant)) -> ListOut:
    """The tenant's adapters with their versions (one query for all versions); ``metrics=false``
    leaves each version's metrics and lineage out (empty), which a list of many adapters with
    evaluation results needs to stay small: read one adapter for its versions' details."""
    with platform(request).store.read() as session:
        adapters = registry.list_adapters(session, tenant)
        versions = registry.versions_by_adapter(session, adapters)
        return ListOut(data=[adapter_out(session, a, versions=versions[a.id], details=metrics)
                             for a in adapters])


@router.get("/{name}")
def show_adapter(name: str, request: Request, tenant: Tenant = Depends(current_tenant)) -> AdapterOut:
    with platform(request).store.read() as session:
        return adapter_out(session, registry.get_adapter(session, tenant, name), history=True)


def _parse_labels(raw: str | None) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    if raw.startswith("["):
        value = parse_json(raw, what="labels", param="labels")
        if not isinstance(value, list):
            raise InvalidInput("labels must be a JSON list of strings", param="labels")
        return [str(v) for v in value]
    return [part.strip() for part in raw.split(",")]


def _parse_json_object(raw: str | None, field: str) -> dict | None:
    if raw is None or not raw.strip():
        return None
    value = parse_json(raw, what=field, param=field)
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object", param=field)
    return value


async def _spool(upload: UploadFile, limit: int) -> Path:
    """Copy the upload to a temp file, refusing more than ``limit`` bytes."""
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-upload-")) / "adapter.tar.gz"
    size = 0
    with tmp.open("wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                shutil.rmtree(tmp.parent, ignore_errors=True)
                raise TooLarge(
                    f"upload is over {limit} bytes (TUNELOOP_MAX_ADAPTER_BYTES)", param="file"
                )
            out.write(chunk)
    return tmp


@router.post("/{name}/versions", status_code=201)
async def register_version(
    name: str,
    request: Request,
    file: UploadFile,
    task: str = Form("chat"),
    labels: str | None = Form(None),
    prompt_template: str | None = Form(None),
    metrics: str | None = Form(None),
    lineage: str | None = Form(None),
    tenant: Tenant = Depends(current_tenant),
) -> VersionOut:
    p = platform(request)
    check_name(name, NameKind.ADAPTER)
    parsed_labels = _parse_labels(labels)
    parsed_metrics = _parse_json_object(metrics, "metrics")
    parsed_lineage = _parse_json_object(lineage, "lineage")
    archive = await _spool(file, p.settings.max_adapter_bytes)
    try:
        row = await run_in_threadpool(
            register_adapter_archive, p, tenant, name, archive, task=task, labels=parsed_labels,
            prompt_template=prompt_template, metrics=parsed_metrics, lineage=parsed_lineage,
        )
    finally:
        shutil.rmtree(archive.parent, ignore_errors=True)
    return version_out(name, row)


@router.get("/{name}/versions/{version}/content", response_class=StreamingResponse)
async def export_version(
    name: str, version: int, request: Request, tenant: Tenant = Depends(current_tenant)
) -> StreamingResponse:
    """The version's PEFT directory as a .tar.gz, the archive ``POST .../versions`` accepts."""
    export = await run_in_threadpool(open_export, platform(request), tenant, name, version)
    return StreamingResponse(
        export.chunks(), media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


def _adapter_after_switch(p: Platform, tenant: Tenant, name: str) -> AdapterOut:
    with p.store.read() as session:
        return adapter_out(session, registry.get_adapter(session, tenant, name), history=True)


@router.post("/{name}/promote")
async def promote(
    name: str, body: PromoteIn, request: Request, tenant: Tenant = Depends(current_tenant)
) -> AdapterOut:
    """Hot swap: the version is loaded and probed on every engine before the alias switches."""
    state = app_state(request)
    await state.swap.promote_async(tenant, name, body.version, body.reason)
    return await run_in_threadpool(_adapter_after_switch, state.platform, tenant, name)


@router.post("/{name}/rollback")
async def rollback(
    name: str, request: Request, body: RollbackIn | None = None,
    tenant: Tenant = Depends(current_tenant),
) -> AdapterOut:
    state = app_state(request)
    await state.swap.rollback_async(tenant, name, body.reason if body else None)
    return await run_in_threadpool(_adapter_after_switch, state.platform, tenant, name)
