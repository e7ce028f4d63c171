"""The operator's read-only views (admin key; included by :mod:`tuneloop.api.admin`):

- ``GET /admin/engines``: the engines as this process's gateway sees them (state, requests in
  flight, loaded adapters). Each gateway replica reports its own view; a process that does not
  serve answers ``serving: false`` and no engines.
- ``GET /admin/jobs``: the job queue across tenants (jobs not yet finished, oldest first).
- ``GET /admin/monitor/events``: the monitor's recent events across tenants, newest first.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from services.store.models import Adapter, FineTuningJob, JobStatus, MonitorEvent, Tenant
from tuneloop.api.deps import app_state, platform
from tuneloop.api.jobs import job_out
from tuneloop.api.policy import event_out

router = APIRouter()

_UNFINISHED = [s for s in JobStatus if not s.is_terminal]


@router.get("/engines")
async def list_engines(request: Request) -> dict[str, Any]:
    """Engines of this gateway; ``state`` is the local engine's lifecycle state, else
    ``ready``/``down`` from the last health check. Async: it reads the placements in the
    event loop that changes them."""
    gw = app_state(request).gateway
    if gw is None:
        return {"object": "list", "serving": False, "data": [],
                "message": "this process does not serve (it runs no gateway)"}
    pool = gw.dispatch.pool
    if pool is None:
        return {"object": "list", "serving": True, "data": [],
                "message": "the engine is starting"}
    process_states = {p.url: p.state.value for p in gw.dispatch.processes}
    data = []
    for slot in pool.slots:
        ready = slot.is_ready()
        data.append({
            "name": slot.name, "url": slot.client.base_url, "ready": ready,
            "state": process_states.get(slot.client.base_url, "ready" if ready else "down"),
            "reachable": bool(getattr(slot.client, "reachable", True)),
            "in_flight": slot.placement.in_flight, "capacity": slot.placement.capacity,
            "loaded_adapters": slot.placement.loaded,
        })
    return {"object": "list", "serving": True, "data": data, "message": None}


@router.get("/jobs")
def job_queue(request: Request, limit: int = Query(100, ge=1, le=500)) -> dict[str, Any]:
    """Unfinished jobs of every tenant (validating, queued, running, paused), oldest first."""
    with platform(request).store.read() as session:
        rows = session.execute(
            select(FineTuningJob, Tenant.name).join(Tenant, Tenant.id == FineTuningJob.tenant_id)
            .where(FineTuningJob.status.in_(_UNFINISHED))
            .order_by(FineTuningJob.created_at, FineTuningJob.id).limit(limit + 1)).all()
        data = [job_out(job, tenant) for job, tenant in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}


@router.get("/monitor/events")
def monitor_events(request: Request, limit: int = Query(50, ge=1, le=500),
                   type: str | None = Query(None, description="decision, dataset, job, gate, "
                                            "promotion, rollback, policy or error")
                   ) -> dict[str, Any]:
    """The monitor's events of every adapter, newest first, with tenant and adapter names."""
    stmt = (select(MonitorEvent, Adapter.name, Tenant.name)
            .join(Adapter, Adapter.id == MonitorEvent.adapter_id)
            .join(Tenant, Tenant.id == Adapter.tenant_id))
    if type is not None:
        stmt = stmt.where(MonitorEvent.type == type)
    with platform(request).store.read() as session:
        rows = session.execute(stmt.order_by(MonitorEvent.id.desc()).limit(limit + 1)).all()
        data = [{**event_out(event), "tenant": tenant, "adapter": adapter}
                for event, adapter, tenant in rows[:limit]]
    return {"object": "list", "data": data, "has_more": len(rows) > limit}
