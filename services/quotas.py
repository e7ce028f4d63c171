"""Per-tenant quotas on what a tenant keeps: dataset files, adapters, versions per adapter and
feedback records (operator settings ``TUNELOOP_TENANT_MAX_*``).

Each intake point checks its quota before the work (validating, unpacking, training), so a
tenant at its quota costs one count query. Over a quota answers 403 ``quota_exceeded``, not 429:
waiting frees nothing, and OpenAI clients retry a 429 on their own. Requests that run at the
same moment can pass a check together and overshoot by their number. A succeeded job's result
file (``training.jobs.results``) counts as a file but is stored even at the quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.errors import Forbidden
from services.settings import Settings
from services.store.models import Adapter, AdapterVersion, DatasetFile, FeedbackRecord, Tenant

QUOTA_EXCEEDED = "quota_exceeded"


@dataclass(frozen=True)
class Quota:
    """One per-tenant limit: ``what`` is counted, ``setting`` raises it, ``remedy`` frees room."""

    what: str
    limit: int
    setting: str
    remedy: str

    def check(self, current: int, adding: int = 1, *, owner: str = "you have") -> None:
        """Raise Forbidden (``quota_exceeded``) when ``current + adding`` is over the limit."""
        if current + adding <= self.limit:
            return
        adds = f" and this request adds {adding}" if adding != 1 else ""
        raise Forbidden(
            f"quota exceeded: {owner} {current} {self.what}{adds}; the limit is {self.limit} "
            f"({self.setting}). {self.remedy}", code=QUOTA_EXCEEDED)


def files_quota(settings: Settings) -> Quota:
    return Quota("dataset files", settings.tenant_max_files, "TUNELOOP_TENANT_MAX_FILES",
                 "Delete files you no longer need (GET /v1/files lists them, jobs' result files "
                 "included; DELETE /v1/files/{id}), reuse one, or ask the operator to raise the "
                 "limit.")


def adapters_quota(settings: Settings) -> Quota:
    return Quota("adapters", settings.tenant_max_adapters, "TUNELOOP_TENANT_MAX_ADAPTERS",
                 "Add a version to one of them instead (GET /v1/adapters lists them) or ask "
                 "the operator to raise the limit.")


def versions_quota(settings: Settings) -> Quota:
    return Quota("versions", settings.tenant_max_versions_per_adapter,
                 "TUNELOOP_TENANT_MAX_VERSIONS_PER_ADAPTER",
                 "Versions are immutable and kept: register under a new adapter name or ask "
                 "the operator to raise the limit.")


def feedback_quota(settings: Settings) -> Quota:
    return Quota("feedback records", settings.tenant_max_feedback_records,
                 "TUNELOOP_TENANT_MAX_FEEDBACK_RECORDS",
                 "Stored feedback is kept for retraining: ask the operator to raise the limit.")


def count_files(session: Session, tenant_id: int) -> int:
    return session.scalar(select(func.count()).select_from(DatasetFile)
                          .where(DatasetFile.tenant_id == tenant_id)) or 0


def check_file_quota(session: Session, settings: Settings, tenant: Tenant) -> None:
    """Raise Forbidden when ``tenant`` cannot store one more dataset file."""
    files_quota(settings).check(count_files(session, tenant.id),
                                owner=f"tenant {tenant.name!r} has")


def check_adapter_quota(session: Session, settings: Settings, tenant: Tenant, name: str) -> None:
    """Raise Forbidden when version N+1 of (tenant, name) cannot be added: the adapter quota
    for a new name, the versions quota for an existing one."""
    adapter_id = session.scalar(select(Adapter.id).where(Adapter.tenant_id == tenant.id,
                                                         Adapter.name == name))
    if adapter_id is None:
        adapters = session.scalar(select(func.count()).select_from(Adapter)
                                  .where(Adapter.tenant_id == tenant.id)) or 0
        adapters_quota(settings).check(adapters, owner=f"tenant {tenant.name!r} has")
        return
    versions = session.scalar(select(func.count()).select_from(AdapterVersion)
                              .where(AdapterVersion.adapter_id == adapter_id)) or 0
    versions_quota(settings).check(versions, owner=f"adapter {name!r} has")


def count_feedback(session: Session, tenant_ids: Collection[int]) -> dict[int, int]:
    """Stored feedback records per tenant (0 for a tenant without any)."""
    counts = dict.fromkeys(tenant_ids, 0)
    if counts:
        for tenant_id, n in session.execute(
                select(FeedbackRecord.tenant_id, func.count()).where(
                    FeedbackRecord.tenant_id.in_(sorted(counts))
                ).group_by(FeedbackRecord.tenant_id)):
            counts[tenant_id] = n
    return counts


class TenantCounts:
    """Per-tenant counts read from the store at most every ``ttl_s`` and kept current with this
    process's own additions in between: a group commit pays no count query per batch (counting
    a million feedback rows takes ~0.1 s). Other processes' additions show at the next read."""

    def __init__(self, count: Callable[[Session, Collection[int]], dict[int, int]],
                 ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._count = count
        self.ttl_s = ttl_s
        self._clock = clock
        self._known: dict[int, tuple[int, float]] = {}  # tenant id -> (count, read at)

    def current(self, session: Session, tenant_ids: Collection[int]) -> dict[int, int]:
        now = self._clock()
        stale = [t for t in tenant_ids
                 if t not in self._known or now - self._known[t][1] >= self.ttl_s]
        if stale:
            for tenant_id, n in self._count(session, stale).items():
                self._known[tenant_id] = (n, now)
        return {t: self._known[t][0] for t in tenant_ids}

    def add(self, tenant_id: int, n: int) -> None:
        """Count ``n`` more for ``tenant_id`` (this process stored them)."""
        if tenant_id in self._known:
            count, read_at = self._known[tenant_id]
            self._known[tenant_id] = (count + n, read_at)
