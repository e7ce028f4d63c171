"""One monitor pass over one adapter: the :class:`WatchedAdapter` (tenant, adapter, policy,
current champion) and the :class:`Cycle` it returns (what it observed, decided and did)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from monitoring.policy import RetrainPolicy
from services.store.models import Adapter, AdapterVersion, Tenant


@dataclass
class Cycle:
    """What one pass did for one adapter (returned by ``run_once``; the store has the details)."""

    tenant: str
    adapter: str
    champion: int | None = None
    drifted: bool | None = None
    input_drift: dict[str, Any] | None = None
    prediction_drift: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    actions: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class WatchedAdapter:
    """An adapter with a policy and a champion, and since when that version is champion."""

    tenant: Tenant
    adapter: Adapter
    policy: RetrainPolicy
    champion: AdapterVersion
    since: datetime
