"""Retrain policy per adapter and the pure decisions made from it.

``should_retrain`` turns a policy, a snapshot of the adapter's state and the current time into a
``Decision`` (retrain, skip or dry_run) with an enumerated reason and a sentence for humans;
``promotion_action`` turns the gate's verdict (:func:`training.gate.decide_gate`) into what to do
with a candidate;
``should_rollback`` decides whether a freshly promoted champion goes back. No clock, store or
engine is touched here: the monitor loop gathers the state and acts on the decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitoring.quality import QualityReport, QualityStatus
from training.gate import GateDecision


class RetrainPolicy(BaseModel):
    """When an adapter is retrained and what happens to the candidate (``/v1/adapters/{name}/policy``)."""

    # Attribute docstrings become field descriptions, so the API's JSON schema documents them.
    # allow_inf_nan: NaN passes no bound check and Infinity every lower bound (cooldown forever).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)

    enabled: bool = True
    """Master switch: when false the monitor never retrains this adapter (reports still run)."""

    schedule_hours: float | None = Field(default=None, gt=0, le=87_600)
    """Retrain every this many hours since the last training started. None: no schedule."""

    on_drift: bool = True
    """Retrain when input or prediction drift persists (see ``drift_windows_m``/``_n``)."""

    drift_windows_m: int = Field(default=2, ge=1)
    """Drift must be found in at least M ...."""

    drift_windows_n: int = Field(default=3, ge=1)
    """... of the last N evaluated windows (windows with insufficient data are not counted)."""

    min_new_labels: int | None = Field(default=200, ge=1)
    """Retrain once this many new examples (labels, corrections, positively rated replies) have
    arrived since the champion's dataset. None: no volume trigger."""

    on_quality_drop: bool = True
    """Retrain when the champion's accuracy or negative-rating rate is significantly worse than
    at promotion."""

    min_new_examples: int = Field(default=1, ge=0)
    """Every trigger needs at least this many new examples: retraining on the champion's own data
    only reproduces the champion. 0 disables the guard."""

    cooldown_hours: float = Field(default=6.0, ge=0, le=87_600)
    """No new training within this many hours of the last one started (at most 10 years, as
    ``schedule_hours``: beyond, the date arithmetic overflows)."""

    max_concurrent_jobs_per_tenant: int = Field(default=1, ge=1)
    """Training jobs one tenant may have running at once."""

    max_concurrent_jobs_total: int = Field(default=2, ge=1)
    """Training jobs the whole platform may have running at once."""

    auto_promote: bool = True
    """Promote a candidate that passes the gate at once; false: it waits for approval."""

    dry_run: bool = False
    """Decide and record events, but start no job, promote nothing and roll nothing back."""

    gate_tolerance: float = Field(default=0.02, ge=0, le=1)
    """How much worse than the champion (absolute, in metric units) a candidate may be on the
    previous eval split."""

    gate_min_improvement: float = Field(default=0.0, ge=0, le=1)
    """How much better than the champion a candidate must be on the new eval split (> this)."""

    gate_max_forgetting_kl: float | None = Field(default=None, ge=0, le=100)
    """Classification: refuse a candidate whose label distribution on the champion's held-out
    texts is further than this mean KL divergence (nats) from the champion's. None: reported,
    never refused on."""

    replay_fraction: float | None = Field(default=None, ge=0, le=1)
    """Share of the champion's training examples replayed into a retrain's training set (chosen
    by hash, so the same examples each time): more keeps more of what the champion knew, less
    lets the new data weigh more. None: the monitor's default (``MonitorConfig.replay_fraction``,
    0.2)."""

    rollback_on_quality_drop: bool = True
    """Roll a promoted champion back to the previous version when its quality drops significantly."""

    @model_validator(mode="after")
    def _check_cross_fields(self) -> RetrainPolicy:
        if self.drift_windows_m > self.drift_windows_n:
            raise ValueError(
                f"drift_windows_m ({self.drift_windows_m}) must be <= drift_windows_n "
                f"({self.drift_windows_n}): drift cannot persist in more windows than are looked at"
            )
        if self.max_concurrent_jobs_per_tenant > self.max_concurrent_jobs_total:
            raise ValueError(
                f"max_concurrent_jobs_per_tenant ({self.max_concurrent_jobs_per_tenant}) must be "
                f"<= max_concurrent_jobs_total ({self.max_concurrent_jobs_total})"
            )
        return self


@dataclass(frozen=True)
class PolicyState:
    """What the monitor knows about one adapter when it asks for a decision.

    ``drift_history`` holds one entry per evaluated window, oldest first: True drifted, False
    not, None insufficient data. Times are timezone-aware or all naive, like ``now``.
    """

    last_training_started_at: datetime | None = None
    reference_time: datetime | None = None
    """Start of the schedule when the adapter was never retrained (e.g. its creation)."""
    drift_history: Sequence[bool | None] = ()
    new_examples: int = 0
    quality_degraded: bool = False
    adapter_job_running: bool = False
    tenant_running_jobs: int = 0
    total_running_jobs: int = 0


class Action(StrEnum):
    RETRAIN = "retrain"
    SKIP = "skip"
    DRY_RUN = "dry_run"


class Reason(StrEnum):
    """Why a decision came out as it did. Triggers first, then everything that blocks one."""

    QUALITY_DROP = "quality_drop"
    DRIFT = "drift"
    NEW_LABELS = "new_labels"
    SCHEDULE = "schedule"
    DISABLED = "disabled"
    NO_TRIGGER = "no_trigger"
    JOB_RUNNING = "job_running"
    COOLDOWN = "cooldown"
    NOT_ENOUGH_NEW_DATA = "not_enough_new_data"
    TENANT_BUDGET = "tenant_budget"
    GLOBAL_BUDGET = "global_budget"


TRIGGERS = (Reason.QUALITY_DROP, Reason.DRIFT, Reason.NEW_LABELS, Reason.SCHEDULE)


@dataclass(frozen=True)
class Decision:
    """``reason`` decided the action; ``triggers`` lists every trigger that fired."""

    action: Action
    reason: Reason
    message: str
    triggers: tuple[Reason, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "reason": self.reason.value,
            "message": self.message,
            "triggers": [t.value for t in self.triggers],
            "details": self.details,
        }


def drift_persists(history: Sequence[bool | None], m: int, n: int) -> tuple[bool, int, int]:
    """(persists, drifted, looked_at): drift in >= m of the last n windows that had enough data."""
    evaluated = [h for h in history if h is not None][-n:]
    drifted = sum(evaluated)
    return drifted >= m, drifted, len(evaluated)


def _fired_triggers(
    policy: RetrainPolicy, state: PolicyState, now: datetime
) -> tuple[list[Reason], list[str]]:
    fired: list[Reason] = []
    notes: list[str] = []
    if policy.on_quality_drop and state.quality_degraded:
        fired.append(Reason.QUALITY_DROP)
        notes.append("quality dropped significantly since promotion")
    if policy.on_drift:
        persists, drifted, looked = drift_persists(
            state.drift_history, policy.drift_windows_m, policy.drift_windows_n
        )
        if persists:
            fired.append(Reason.DRIFT)
            notes.append(f"drift in {drifted} of the last {looked} windows")
    if policy.min_new_labels is not None and state.new_examples >= policy.min_new_labels:
        fired.append(Reason.NEW_LABELS)
        notes.append(f"{state.new_examples} new examples (>= {policy.min_new_labels})")
    if policy.schedule_hours is not None:
        since = state.last_training_started_at or state.reference_time
        if since is None or now - since >= timedelta(hours=policy.schedule_hours):
            fired.append(Reason.SCHEDULE)
            notes.append(f"scheduled every {policy.schedule_hours:g} h")
    return fired, notes


def should_retrain(policy: RetrainPolicy, state: PolicyState, now: datetime) -> Decision:
    """Decide whether to start a training job for one adapter now.

    Triggers (quality drop, persistent drift, new labels, schedule) are checked first; a fired
    trigger is then blocked by, in order: a job already running for the adapter, the cooldown,
    too few new examples, the tenant's job budget, the global job budget. ``dry_run`` turns a
    retrain into DRY_RUN. Pure: the same inputs always give the same decision.
    """
    if not policy.enabled:
        return Decision(Action.SKIP, Reason.DISABLED, "retraining is disabled by the policy")
    fired, notes = _fired_triggers(policy, state, now)
    if not fired:
        return Decision(Action.SKIP, Reason.NO_TRIGGER, "no trigger fired")
    why = "; ".join(notes)
    triggers = tuple(fired)

    def skip(reason: Reason, message: str) -> Decision:
        return Decision(Action.SKIP, reason, f"{message} (triggers: {why})", triggers)

    if state.adapter_job_running:
        return skip(Reason.JOB_RUNNING, "a training job for this adapter is already running")
    if state.last_training_started_at is not None and policy.cooldown_hours > 0:
        ready_at = state.last_training_started_at + timedelta(hours=policy.cooldown_hours)
        if now < ready_at:
            return skip(Reason.COOLDOWN, f"in cooldown until {ready_at.isoformat()}")
    if state.new_examples < policy.min_new_examples:
        return skip(
            Reason.NOT_ENOUGH_NEW_DATA,
            f"only {state.new_examples} new examples, need >= {policy.min_new_examples}",
        )
    if state.tenant_running_jobs >= policy.max_concurrent_jobs_per_tenant:
        return skip(
            Reason.TENANT_BUDGET,
            f"tenant already runs {state.tenant_running_jobs} jobs "
            f"(max {policy.max_concurrent_jobs_per_tenant})",
        )
    if state.total_running_jobs >= policy.max_concurrent_jobs_total:
        return skip(
            Reason.GLOBAL_BUDGET,
            f"{state.total_running_jobs} jobs already running (max {policy.max_concurrent_jobs_total})",
        )
    if policy.dry_run:
        return Decision(Action.DRY_RUN, fired[0], f"dry run: would retrain ({why})", triggers)
    return Decision(Action.RETRAIN, fired[0], f"retrain: {why}", triggers)


# --- promotion ----------------------------------------------------------------------------


class PromotionAction(StrEnum):
    PROMOTE = "promote"
    AWAIT_APPROVAL = "await_approval"
    REJECT = "reject"
    DRY_RUN = "dry_run"


def promotion_action(policy: RetrainPolicy, gate: GateDecision) -> PromotionAction:
    """What to do with a gated candidate under ``policy``."""
    if not gate.passed:
        return PromotionAction.REJECT
    if policy.dry_run:
        return PromotionAction.DRY_RUN
    return PromotionAction.PROMOTE if policy.auto_promote else PromotionAction.AWAIT_APPROVAL


# --- rollback ---------------------------------------------------------------------------------


class RollbackReason(StrEnum):
    QUALITY_DROP = "quality_drop"
    QUALITY_OK = "quality_ok"
    INSUFFICIENT_DATA = "insufficient_data"
    NO_BASELINE = "no_baseline"
    NO_PREVIOUS_VERSION = "no_previous_version"
    DISABLED = "disabled"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class RollbackDecision:
    rollback: bool
    reason: RollbackReason
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"rollback": self.rollback, "reason": self.reason.value, "message": self.message}


def should_rollback(
    policy: RetrainPolicy, quality: QualityReport, has_previous_version: bool
) -> RollbackDecision:
    """Roll the champion back when its fresh feedback is significantly worse than at promotion."""
    if not quality.degraded:
        reason = {
            QualityStatus.INSUFFICIENT_DATA: RollbackReason.INSUFFICIENT_DATA,
            QualityStatus.NO_BASELINE: RollbackReason.NO_BASELINE,
        }.get(quality.status, RollbackReason.QUALITY_OK)
        return RollbackDecision(False, reason, f"no significant quality drop ({quality.status.value})")
    worse = ", ".join(quality.details.get("worse_metrics", [])) or "quality"
    if not policy.rollback_on_quality_drop:
        return RollbackDecision(
            False, RollbackReason.DISABLED, f"{worse} dropped, but automatic rollback is disabled"
        )
    if not has_previous_version:
        return RollbackDecision(
            False, RollbackReason.NO_PREVIOUS_VERSION,
            f"{worse} dropped, but there is no previous version to roll back to",
        )
    if policy.dry_run:
        return RollbackDecision(False, RollbackReason.DRY_RUN, f"dry run: would roll back ({worse} dropped)")
    return RollbackDecision(True, RollbackReason.QUALITY_DROP, f"roll back: {worse} dropped significantly")
