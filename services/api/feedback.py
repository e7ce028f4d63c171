"""``POST /v1/feedback``: one feedback object, or ``{"data": [...]}`` for a batch (<= 1000)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from monitoring.feedback import FeedbackBatcher, FeedbackIn, feedback_kinds
from services.api.deps import current_tenant, platform
from services.errors import InvalidInput
from services.store.models import Tenant

router = APIRouter(tags=["feedback"])
MAX_BATCH = 1000


def _parse(raw: object) -> tuple[list[FeedbackIn], bool]:
    batch = isinstance(raw, dict) and "data" in raw
    items = raw["data"] if batch else [raw]
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise InvalidInput(f"data must be a list of 1..{MAX_BATCH} feedback objects", param="data")
    parsed = []
    for i, item in enumerate(items):
        try:
            parsed.append(FeedbackIn.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = f"data[{i}]." if batch else ""
            loc = ".".join(str(x) for x in err.get("loc", ()))
            raise InvalidInput(f"invalid feedback: {where}{loc}: {err['msg']}", param=loc or None) from exc
    return parsed, batch


def _batcher(request: Request) -> FeedbackBatcher:
    """The app's batcher for the running event loop (apps may outlive a loop in tests)."""
    loop = asyncio.get_running_loop()
    current = getattr(request.app.state, "feedback_batcher", None)
    if current is None or current[0] is not loop:
        current = request.app.state.feedback_batcher = (loop, FeedbackBatcher(platform(request).store))
    return current[1]


@router.post("/v1/feedback")
async def post_feedback(request: Request, tenant: Tenant = Depends(current_tenant)) -> JSONResponse:
    try:
        raw = await request.json()
    except ValueError as exc:
        raise InvalidInput("request body is not valid JSON") from exc
    items, batch = _parse(raw)
    gateway = getattr(request.app.state, "gateway", None)
    if gateway is not None and gateway.request_log is not None:
        # A response served a moment ago may still sit in the log's buffer.
        await run_in_threadpool(gateway.request_log.flush, 5.0)
    stored = await _batcher(request).submit(tenant, items)
    if gateway is not None:
        for item, result in zip(items, stored):
            if result.created:
                for kind in feedback_kinds(item):
                    gateway.metrics.feedback.labels(kind).inc()
    out = [{"object": "feedback", "id": s.id, "response_id": s.response_id, "created": s.created}
           for s in stored]
    if batch:
        return JSONResponse({"object": "list", "data": out}, status_code=200)
    return JSONResponse(out[0], status_code=201 if stored[0].created else 200)
