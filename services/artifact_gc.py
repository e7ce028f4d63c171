"""Garbage collection of the artifact store: a blob goes when no row references its key.

Blobs are content-addressed and shared: two tenants uploading the same file, or two versions
with the same weights, store one blob. A delete therefore only hands its keys to
:func:`collect`, which removes those that nothing references any more:

- ``dataset_files.sha256`` (an uploaded or monitor-compiled dataset),
- ``adapter_versions.artifact_key`` (a version's PEFT directory),
- ``retrain_runs.dataset`` (``lineage_key``: the lineage of a compiled dataset).

Concurrency: an upload of identical content may run between the check and the delete. Each
key's check-and-delete runs in one write transaction holding a lock on that key (a PostgreSQL
advisory lock; on SQLite every write transaction is exclusive), and a writer that adds a
reference takes the same lock in the transaction that inserts its row and stores the blob again
if it is gone (:func:`keep_stored`). Either the collector sees the new row and keeps the blob,
or the writer sees the blob missing and writes it back before its row commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy import String, cast, exists, or_, select, text
from sqlalchemy.orm import Session

from services.artifacts import ArtifactStore, check_key
from services.store.db import Store
from services.store.models import AdapterVersion, DatasetFile, RetrainRun

log = logging.getLogger("tuneloop.artifacts")

LOCK_CLASS = 0x746C  # "tl": the first key of the advisory locks on artifact keys


def lock_key(session: Session, key: str) -> None:
    """Hold the lock on ``key`` until the session's transaction ends (no-op on SQLite, whose
    write transactions already exclude each other)."""
    check_key(key)
    if session.get_bind().dialect.name == "postgresql":
        # Two 32-bit keys: a class for artifact locks and the key's first 31 bits.
        session.execute(text("SELECT pg_advisory_xact_lock(CAST(:cls AS integer), CAST(:obj AS integer))"),
                        {"cls": LOCK_CLASS, "obj": int(key[:8], 16) >> 1})


def is_referenced(session: Session, key: str) -> bool:
    """Whether any row still names ``key`` (see the module docstring for which rows)."""
    return bool(session.scalar(select(or_(
        exists().where(DatasetFile.sha256 == key),
        exists().where(AdapterVersion.artifact_key == key),
        exists().where(cast(RetrainRun.dataset, String).contains(key)),
    ))))


def keep_stored(session: Session, artifacts: ArtifactStore, key: str,
                write: Callable[[], str]) -> None:
    """Call in the write transaction that adds a row referencing ``key``, after the blob was
    put: locks the key and, if a collection removed the blob meanwhile, writes it again."""
    lock_key(session, key)
    if not artifacts.exists(key):
        written = write()
        if written != key:
            raise RuntimeError(f"re-stored content has key {written}, expected {key}")


def collect(store: Store, artifacts: ArtifactStore, keys: Iterable[str]) -> list[str]:
    """Delete the blobs of ``keys`` that nothing references; returns the keys deleted. A blob
    that cannot be deleted (the store is down) is logged and left for a later collection."""
    deleted = []
    for key in sorted(set(keys)):
        try:
            with store.write() as session:
                lock_key(session, key)
                if not is_referenced(session, key) and artifacts.delete(key):
                    deleted.append(key)
        except OSError as exc:
            log.warning("artifact %s is unreferenced but could not be deleted: %s", key, exc)
    return deleted
