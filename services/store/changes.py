"""Cross-process cache invalidation: one counter that moves with every committed change to what
serving caches.

Every flush that adds, changes or deletes a tenant, API key, adapter or adapter version also
increments ``serving_changes.counter`` in the same transaction (a session ``after_flush`` hook,
so no write path can forget it). Gateways poll the counter (one primary-key read) and clear
their key and model caches when it moved: a revocation or promotion made by any process is in
force everywhere within one poll interval, whatever the caches' TTLs.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.store.models import Adapter, AdapterVersion, ApiKey, ServingChanges, Tenant

WATCHED = (Tenant, ApiKey, Adapter, AdapterVersion)


def track_changes(factory: sessionmaker[Session]) -> None:
    """Make every session of ``factory`` count its changes to :data:`WATCHED` objects."""

    def after_flush(session: Session, _context: Any) -> None:
        if any(isinstance(obj, WATCHED)
               for obj in chain(session.new, session.dirty, session.deleted)):
            session.connection().execute(
                update(ServingChanges).where(ServingChanges.id == 1)
                .values(counter=ServingChanges.counter + 1))

    event.listen(factory, "after_flush", after_flush)


def read_counter(session: Session) -> int:
    """The current counter (0 on a store migrated before the counter existed)."""
    return session.scalar(select(ServingChanges.counter).where(ServingChanges.id == 1)) or 0

