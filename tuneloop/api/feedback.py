"""``POST /v1/feedback``: one feedback object, or ``{"data": [...]}`` for a batch (<= 1000).

The route stays on the event loop (no threadpool hop per request): the tenant comes from the key
cache when it can, items are validated in one pass, and the store write is group-committed with
other requests' feedback by the app's :class:`FeedbackBatcher`.
"""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from monitoring.feedback import FeedbackIn, Submission, feedback_kinds
from services.errors import InvalidInput
from tuneloop.api.deps import app_state, cached_tenant, current_tenant
from tuneloop.api.json_input import parse_json

router = APIRouter(tags=["feedback"])
MAX_BATCH = 1000
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
