"""Feedback routes:

- ``POST /v1/feedback``: one feedback object, or ``{"data": [...]}`` for a batch (<= 1000).
- ``GET /v1/adapters/{name}/requests``: the adapter's latest logged requests (newest first,
  input and output cut to a preview) with the feedback each got; another tenant's adapter is 404.

The POST route stays on the event loop (no threadpool hop per request): the tenant comes from the key
cache when it can, items are validated in one pass, and the store write is group-committed with
other requests' feedback by the app's :class:`FeedbackBatcher`.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from monitoring.feedback import FeedbackIn, Submission, feedback_kinds
from services import registry
from services.errors import InvalidInput
from services.store.models import FeedbackRecord, RequestRecord, Tenant
from tuneloop.api.deps import app_state, cached_tenant, current_tenant, platform
from tuneloop.api.json_input import parse_json

router = APIRouter(tags=["feedback"])
MAX_BATCH = 1000
PREVIEW_CHARS = 300
"""A request's input and output are cut to this many characters in the request list (the log
keeps up to TUNELOOP_REQUEST_LOG_MAX_CHARS per field; a page of 100 stays small)."""
_ITEMS = TypeAdapter(list[FeedbackIn])


def _parse(raw: object) -> tuple[list[FeedbackIn], bool]:
    body = raw if isinstance(raw, dict) and "data" in raw else None
    batch = body is not None
    items = body["data"] if body is not None else [raw]
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise InvalidInput(f"data must be a list of 1..{MAX_BATCH} feedback objects", param="data")
    if body is not None and len(body) > 1:
        extra = sorted(k for k in body if k != "data")
        raise InvalidInput(f"unknown fields {extra} next to data; send {{\"data\": [...]}}", param=extra[0])
    try:
        return _ITEMS.validate_python(items), batch
    except ValidationError as exc:
        err = exc.errors()[0]
        index, *field = err.get("loc", ()) or (0,)
        where = f"data[{index}]." if batch else ""
        loc = ".".join(str(x) for x in field)
        msg = err["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"invalid feedback: {where}{loc or 'item'}: {msg}", param=loc or None) from exc


@router.post("/v1/feedback")
async def post_feedback(request: Request) -> JSONResponse:
    tenant = cached_tenant(request)
    if tenant is None:
        tenant = await run_in_threadpool(current_tenant, request)
    raw = parse_json(await request.body(), what="feedback body")
    items, batch = _parse(raw)
    state = app_state(request)
    gateway = state.gateway
    request_log = gateway.request_log if gateway is not None else None
    if request_log is not None and request_log.is_pending(item.response_id for item in items):
        # A response served a moment ago may still sit in the log's buffer.
        await run_in_threadpool(request_log.flush, 5.0)
    stored = await state.feedback.submit(Submission(tenant.id, items, bulk=batch))
    if gateway is not None:
        kinds = Counter(k for item, s in zip(items, stored) if s.created for k in feedback_kinds(item))
        for kind, n in kinds.items():
            gateway.metrics.feedback.labels(kind).inc(n)
    out = [{"object": "feedback", "id": s.id, "response_id": s.response_id, "created": s.created}
           for s in stored]
    if batch:
        return JSONResponse({"object": "list", "data": out}, status_code=200)
    return JSONResponse(out[0], status_code=201 if stored[0].created else 200)


def preview(value: object) -> str | None:
    """What a logged input or output reads as, cut to :data:`PREVIEW_CHARS` (ending in "…"):
    the last user message of a chat, a prompt or label as is, several texts one per line."""
    if value is None:
        return None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        users = [m for m in value if m.get("role") == "user"] or value
        value = users[-1].get("content")
        if isinstance(value, list):  # content parts
            value = " ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    if isinstance(value, list):
        value = "\n".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def _feedback_out(row: FeedbackRecord) -> dict[str, Any]:
    return {"id": row.id, "rating": row.rating, "label": row.label,
            "correction": preview(row.correction), "comment": preview(row.comment),
            "created_at": row.created_at}


@router.get("/v1/adapters/{name}/requests")
def list_requests(name: str, request: Request, limit: int = Query(20, ge=1, le=100),
                  tenant: Tenant = Depends(current_tenant)) -> dict[str, Any]:
    """The latest ``limit`` logged requests served by the tenant's adapter ``name`` since it was
    created (a deleted adapter's namesake's requests are not its), newest first, each with its
    feedback (oldest first). Sampled-out requests are not in the log, so not here either."""
    with platform(request).store.read() as session:
        adapter = registry.get_adapter(session, tenant, name)
        rows = list(session.scalars(
            select(RequestRecord)
            .where(RequestRecord.tenant_id == tenant.id, RequestRecord.adapter == name,
                   RequestRecord.created_at >= adapter.created_at)
            .order_by(RequestRecord.created_at.desc(), RequestRecord.id.desc())
            .limit(limit)))
        feedback: defaultdict[str, list[FeedbackRecord]] = defaultdict(list)
        if rows:
            for fb in session.scalars(
                    select(FeedbackRecord)
                    .where(FeedbackRecord.tenant_id == tenant.id,
                           FeedbackRecord.response_id.in_([r.id for r in rows]))
                    .order_by(FeedbackRecord.created_at, FeedbackRecord.id)):
                feedback[fb.response_id].append(fb)
        data = [{"id": r.id, "created_at": r.created_at, "route": r.route, "status": r.status,
                 "version": r.adapter_version,
                 "model": registry.version_ref(name, r.adapter_version)
                 if r.adapter_version is not None else name,
                 "input": preview(r.input), "output": preview(r.output),
                 "latency_ms": r.latency_ms,
                 "feedback": [_feedback_out(fb) for fb in feedback[r.id]]} for r in rows]
    return {"object": "list", "adapter": name, "data": data}
