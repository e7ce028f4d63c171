"""Files API for datasets: ``POST /v1/files`` (multipart, purpose ``fine-tune``), ``GET /v1/files``,
``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``. Tenant-scoped. (``DELETE /v1/files/{id}``
is with the other deletes in :mod:`tuneloop.api.deletes`.) Succeeded jobs' step metrics are
files too (purpose ``fine-tune-results``, :mod:`training.jobs.results`), which only tuneloop
creates.

A file with problems is refused with 400 whose message lists every problem with its line number
(the openai client raises BadRequestError with that message); nothing is stored for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from services.errors import TooLarge
from services.store.models import DatasetFile, Tenant
from training.jobs import files
from training.jobs.store import unix
from tuneloop.api.deps import current_tenant, platform
from tuneloop.api.schemas_jobs import FileOut, Page

router = APIRouter(prefix="/v1/files", tags=["files"])


def file_out(row: DatasetFile) -> FileOut:
    return FileOut(id=row.id, bytes=row.bytes, created_at=unix(row.created_at),
                   filename=row.filename, purpose=row.purpose, status=row.status, task=row.task,
                   format=row.format, sha256=row.sha256, stats=row.stats or {})


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"file is over {limit} bytes (TUNELOOP_MAX_UPLOAD_BYTES); split it or "
                           "raise the limit", param="file")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("")
async def upload_file(
    request: Request, file: UploadFile, purpose: str = Form(...),
    task: str | None = Form(None, description="chat or classification (default: detected)."),
    tenant: Tenant = Depends(current_tenant),
) -> FileOut:
    p = platform(request)
    limit = p.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise TooLarge(f"upload is over {limit} bytes (TUNELOOP_MAX_UPLOAD_BYTES)", param="file")
    await run_in_threadpool(files.check_upload, p, tenant, purpose)  # before reading it
    data = await _read_limited(file, limit)
    row = await run_in_threadpool(files.store_file, p, tenant, data, file.filename or "",
                                  purpose, task or None)
    return file_out(row)


@router.get("")
def list_files(request: Request, purpose: str | None = None,
               tenant: Tenant = Depends(current_tenant)) -> Page:
    with platform(request).store.read() as session:
        return Page(data=[file_out(r) for r in files.list_files(session, tenant, purpose)])


@router.get("/{file_id}")
def get_file(file_id: str, request: Request, tenant: Tenant = Depends(current_tenant)) -> FileOut:
    with platform(request).store.read() as session:
        return file_out(files.get_file(session, tenant, file_id))


@router.get("/{file_id}/content")
def get_file_content(file_id: str, request: Request,
                     tenant: Tenant = Depends(current_tenant)) -> Response:
    p = platform(request)
    with p.store.read() as session:
        row = files.get_file(session, tenant, file_id)
    media = "text/csv" if row.format == "csv" else "application/jsonl"
    return StreamingResponse(files.file_chunks(p, row), media_type=media,
                             headers={"Content-Length": str(row.bytes)})
