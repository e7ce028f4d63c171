"""Retrain policy and monitor routes of an adapter (tenant-scoped; another tenant's adapter is 404):

- ``GET``/``PUT``/``DELETE /v1/adapters/{name}/policy``: the retrain policy (PUT body: a
  ``RetrainPolicy``; 400 names every bad field). Only adapters with a policy are monitored.
- ``GET /v1/adapters/{name}/drift``: the latest drift and quality reports and their history.
- ``GET /v1/adapters/{name}/events``: the monitor's decisions with their reasons, newest first.
- ``GET /v1/adapters/{name}/retrains``: the retrains the monitor started and their outcome.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from monitoring import monitor_store as ms
from monitoring.policy import RetrainPolicy, drift_persists
from services import registry
from services.errors import InvalidInput
from services.settings import Settings
from services.store.models import (
    MAX_ROW_ID,
    AdapterVersion,
    MonitorEvent,
    MonitorReport,
    RetrainPolicyRecord,
    RetrainRun,
    Tenant,
)
from tuneloop.api.deps import current_tenant, platform

router = APIRouter(prefix="/v1/adapters", tags=["monitoring"])


class PolicyOut(BaseModel):
    object: str = "retrain_policy"
    adapter: str
    configured: bool
    """False: no policy is stored (the defaults are shown) and the monitor skips the adapter."""
    policy: RetrainPolicy
    updated_at: datetime | None = None


def _policy_out(name: str, row: RetrainPolicyRecord | None) -> PolicyOut:
    if row is None:
        return PolicyOut(adapter=name, configured=False, policy=RetrainPolicy())
    return PolicyOut(adapter=name, configured=True, policy=RetrainPolicy.model_validate(row.policy),
                     updated_at=row.updated_at)


def report_out(row: MonitorReport) -> dict[str, Any]:
    return {"id": row.id, "version": row.version, "created_at": row.created_at,
            "new_window": row.new_window, "drifted": row.drifted, "n_window": row.n_window,
            "window_end": row.window_end, "input_drift": row.input_drift,
            "prediction_drift": row.prediction_drift, "quality": row.quality}


def event_out(row: MonitorEvent) -> dict[str, Any]:
    return {"id": f"monevent-{row.id}", "type": row.type, "action": row.action,
            "reason": row.reason, "message": row.message, "data": row.data,
            "created_at": row.created_at}


def run_out(row: RetrainRun) -> dict[str, Any]:
    return {"id": row.id, "status": row.status, "trigger": row.trigger,
            "champion_version": row.champion_version, "job_id": row.job_id,
            "dataset_version": row.dataset_version, "dataset": row.dataset,
            "training_file": row.training_file, "validation_file": row.validation_file,
            "candidate_version": row.candidate_version, "evaluation": row.evaluation,
            "gate": row.gate, "baseline": row.baseline, "created_at": row.created_at,
            "finished_at": row.finished_at, "promoted_at": row.promoted_at}


def _check_budgets(policy: RetrainPolicy, settings: Settings) -> None:
    """Training capacity is the operator's: a policy may ask for less, never for more."""
    for field, limit, setting in (
            ("max_concurrent_jobs_per_tenant", settings.train_max_active_jobs_per_tenant,
             "TUNELOOP_TRAIN_MAX_ACTIVE_JOBS_PER_TENANT"),
            ("max_concurrent_jobs_total", settings.train_max_active_jobs,
             "TUNELOOP_TRAIN_MAX_ACTIVE_JOBS")):
        value = getattr(policy, field)
        if value > limit:
            raise InvalidInput(f"{field}={value} is over the operator's limit of {limit} "
                               f"({setting}); ask for {limit} or less", param=field)


@router.get("/{name}/policy")
def get_policy(name: str, request: Request, tenant: Tenant = Depends(current_tenant)) -> PolicyOut:
    with platform(request).store.read() as session:
        adapter = registry.get_adapter(session, tenant, name)
        return _policy_out(name, ms.get_policy(session, adapter.id))


@router.put("/{name}/policy")
def put_policy(name: str, body: RetrainPolicy, request: Request,
               tenant: Tenant = Depends(current_tenant)) -> PolicyOut:
    p = platform(request)
    _check_budgets(body, p.settings)
    with p.store.write() as session:
        adapter = registry.get_adapter(session, tenant, name)
        row = ms.put_policy(session, adapter, body)
        ms.add_event(session, adapter.id, ms.EventType.POLICY, "retrain policy set",
                     action="set", data=body.model_dump(mode="json"))
        return _policy_out(name, row)


@router.delete("/{name}/policy")
def delete_policy(name: str, request: Request, tenant: Tenant = Depends(current_tenant)
                  ) -> PolicyOut:
    """Stop monitoring the adapter (its reports and events are kept)."""
    with platform(request).store.write() as session:
        adapter = registry.get_adapter(session, tenant, name)
        if ms.delete_policy(session, adapter.id):
            ms.add_event(session, adapter.id, ms.EventType.POLICY, "retrain policy removed; "
                         "the monitor no longer watches this adapter", action="delete")
        return _policy_out(name, None)


@router.get("/{name}/drift")
def get_drift(name: str, request: Request, limit: int = Query(20, ge=1, le=500),
              tenant: Tenant = Depends(current_tenant)) -> dict[str, Any]:
    """Latest drift window and quality of the champion, the drift alarm, and the history."""
    with platform(request).store.read() as session:
        adapter = registry.get_adapter(session, tenant, name)
        policy_row = ms.get_policy(session, adapter.id)
        policy = RetrainPolicy.model_validate(policy_row.policy) if policy_row else RetrainPolicy()
        history = ms.list_reports(session, adapter.id, limit=limit)
        window = ms.list_reports(session, adapter.id, limit=1, windows_only=True)
        row = session.get(AdapterVersion, adapter.champion_version_id) \
            if adapter.champion_version_id is not None else None
        champion = row.version if row is not None else None
        alarm = False
        if champion is not None:
            drifts = ms.drift_history(session, adapter.id, champion, policy.drift_windows_n)
            alarm = drift_persists(drifts, policy.drift_windows_m, policy.drift_windows_n)[0]
    latest = window[0] if window else None
    return {
        "object": "adapter.drift", "adapter": name,
        "champion": registry.version_ref(name, champion) if champion else None,
        "monitored": policy_row is not None, "drift_alarm": alarm,
        "input_drift": latest.input_drift if latest else None,
        "prediction_drift": latest.prediction_drift if latest else None,
        "window": report_out(latest) if latest else None,
        "quality": history[0].quality if history else None,
        "history": [report_out(r) for r in history],
    }


@router.get("/{name}/events")
def list_events(name: str, request: Request, limit: int = Query(50, ge=1, le=1000),
                before: int | None = Query(None, ge=0, le=MAX_ROW_ID,
                                           description="Only events older than this id "
                                           "(the number of monevent-N)."),
                type: str | None = Query(None, description="decision, dataset, job, gate, "
                                         "promotion, rollback, policy or error"),
                tenant: Tenant = Depends(current_tenant)) -> dict[str, Any]:
    with platform(request).store.read() as session:
        adapter = registry.get_adapter(session, tenant, name)
        rows = ms.list_events(session, adapter.id, limit=limit + 1, before=before, type_=type)
    return {"object": "list", "data": [event_out(r) for r in rows[:limit]],
            "has_more": len(rows) > limit}


@router.get("/{name}/retrains")
def list_retrains(name: str, request: Request, limit: int = Query(20, ge=1, le=100),
                  tenant: Tenant = Depends(current_tenant)) -> dict[str, Any]:
    with platform(request).store.read() as session:
        adapter = registry.get_adapter(session, tenant, name)
        rows = ms.list_runs(session, adapter.id, limit=limit)
    return {"object": "list", "data": [run_out(r) for r in rows]}
