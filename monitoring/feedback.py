"""Feedback on served responses: validation and idempotent, tenant-scoped storage.

A feedback ``id`` chosen by the client makes a submission idempotent: sending it again returns
the stored record and changes nothing. Ids are scoped per tenant.

Writes are grouped: :func:`write_feedback` stores the items of many requests with three batched
lookups (existing ids, responses, label sets) and one multi-row insert. :func:`plan_feedback`,
the decision part, is pure. :class:`FeedbackBatcher` feeds it concurrent requests (group commit)
and answers each only after the commit, so an acknowledged event is durable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Insert, and_, or_, select
from sqlalchemy.orm import Session

from services.errors import InvalidInput, NotFound, RateLimited, TuneloopError
from services.quotas import Quota, TenantCounts, count_feedback
from services.store.db import Store
from services.store.models import Adapter, AdapterVersion, FeedbackRecord, RequestRecord, Tenant

KINDS = ("rating", "label", "correction", "comment")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=64)
    rating: int | None = Field(default=None, description="-1 (bad) or 1 (good).")
    label: str | None = Field(default=None, max_length=256, description="Ground-truth label.")
    correction: str | None = Field(default=None, max_length=100_000, description="Ideal reply.")
    comment: str | None = Field(default=None, max_length=10_000)
    id: str | None = Field(default=None, min_length=1, max_length=100, description="Idempotency id.")

    @model_validator(mode="after")
    def _check(self) -> FeedbackIn:
        if self.rating is not None and self.rating not in (-1, 1):
            raise ValueError(f"rating must be -1 or 1, not {self.rating}")
        if self.rating is None and self.label is None and self.correction is None and self.comment is None:
            raise ValueError("feedback needs at least one of rating, label, correction, comment")
        return self


@dataclass(frozen=True)
class StoredFeedback:
    id: str
    response_id: str
    created: bool  # False when an earlier submission with the same id was returned


@dataclass(frozen=True)
class ResponseInfo:
    """What feedback needs to know about a served response."""

    tenant_id: int
    adapter: str | None
    adapter_version: int | None


@dataclass(frozen=True)
class Submission:
    """One request's feedback items; ``bulk`` says errors name items as ``data[i]``."""

    tenant_id: int
    items: Sequence[FeedbackIn]
    bulk: bool = False


LabelKey = tuple[int, str, int]  # (tenant id, adapter name, version)


def feedback_kinds(item: FeedbackIn) -> list[str]:
    return [k for k in KINDS if getattr(item, k) is not None]


def storage_key(tenant_id: int, client_id: str) -> str:
    return f"t{tenant_id}:{client_id}"


def _client_ids(sub: Submission) -> list[str]:
    return [item.id or uuid.uuid4().hex for item in sub.items]


def _item_error(sub: Submission, i: int, item: FeedbackIn, response: ResponseInfo | None,
                labels: dict[LabelKey, list[str] | None]) -> TuneloopError | None:
    where = f"data[{i}]: " if sub.bulk else ""
    param = f"data[{i}].response_id" if sub.bulk else "response_id"
    if response is None or response.tenant_id != sub.tenant_id:
        return NotFound(f"{where}response {item.response_id!r} does not exist", param=param)
    if item.label is None:
        return None
    param = f"data[{i}].label" if sub.bulk else "label"
    label_set = None
    if response.adapter is not None and response.adapter_version is not None:
        label_set = labels.get((sub.tenant_id, response.adapter, response.adapter_version))
    if label_set is None:
        return InvalidInput(
            f"{where}response {item.response_id!r} was not served by a classification adapter; "
            "send a rating or a correction instead of a label", param=param,
        )
    if item.label not in label_set:
        return InvalidInput(
            f"{where}label {item.label!r} is not one of the adapter's labels {label_set}", param=param,
        )
    return None


def _combine(errors: list[TuneloopError]) -> TuneloopError:
    """One error for a request: 400 if any item is invalid, else 404; the message lists the items."""
    if len(errors) == 1:
        return errors[0]
    cls = InvalidInput if any(isinstance(e, InvalidInput) for e in errors) else NotFound
    shown = "; ".join(e.message for e in errors[:10])
    more = f"; and {len(errors) - 10} more" if len(errors) > 10 else ""
    return cls(f"{len(errors)} feedback items were rejected, nothing was stored: {shown}{more}",
               param=errors[0].param)


def plan_feedback(
    submissions: Sequence[Submission],
    client_ids: Sequence[Sequence[str]],
    existing: dict[str, str],
    responses: dict[str, ResponseInfo],
    labels: dict[LabelKey, list[str] | None],
    quota: Quota | None = None,
    stored: dict[int, int] | None = None,
) -> tuple[list[list[StoredFeedback] | TuneloopError], list[dict]]:
    """Decide each submission's outcome and the rows to insert (pure).

    ``existing`` maps stored keys to their response id. A submission is all or nothing: any bad
    item rejects it with one error naming every bad item, and one whose new records would take
    its tenant past ``quota`` (``stored``: records per tenant now) is refused with Forbidden.
    Ids already stored, or stored by an earlier accepted submission or item of this batch,
    answer ``created=False``.
    """
    outcomes: list[list[StoredFeedback] | TuneloopError] = []
    rows: list[dict] = []
    taken = dict(existing)
    counts = dict(stored or {})
    for sub, ids in zip(submissions, client_ids):
        errors = []
        for i, (item, cid) in enumerate(zip(sub.items, ids)):
            if storage_key(sub.tenant_id, cid) in existing:
                continue  # a resend: answered from the stored record, not re-validated
            err = _item_error(sub, i, item, responses.get(item.response_id), labels)
            if err is not None:
                errors.append(err)
        if errors:
            outcomes.append(_combine(errors))
            continue
        result, new_rows = [], []
        new_keys: dict[str, str] = {}
        for item, cid in zip(sub.items, ids):
            key = storage_key(sub.tenant_id, cid)
            if key in taken or key in new_keys:
                result.append(StoredFeedback(cid, taken.get(key) or new_keys[key], created=False))
                continue
            response = responses[item.response_id]
            new_keys[key] = item.response_id
            new_rows.append({
                "id": key, "tenant_id": sub.tenant_id, "response_id": item.response_id,
                "adapter": response.adapter, "adapter_version": response.adapter_version,
                "rating": item.rating, "label": item.label, "correction": item.correction,
                "comment": item.comment,
            })
            result.append(StoredFeedback(cid, item.response_id, created=True))
        if quota is not None and new_rows:
            try:
                quota.check(counts.get(sub.tenant_id, 0), len(new_rows))
            except TuneloopError as exc:
                outcomes.append(exc)
                continue
            counts[sub.tenant_id] = counts.get(sub.tenant_id, 0) + len(new_rows)
        taken.update(new_keys)
        rows.extend(new_rows)
        outcomes.append(result)
    return outcomes, rows


def _chunks(values: Sequence, size: int = 500) -> Iterable[Sequence]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


class LabelSets:
    """Label sets of adapter versions, cached (versions are immutable); None for chat adapters."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._cache: dict[LabelKey, list[str] | None] = {}

    def lookup(self, session: Session, keys: Iterable[LabelKey]) -> dict[LabelKey, list[str] | None]:
        wanted = set(keys)
        missing = [k for k in wanted if k not in self._cache]
        if missing:
            found: dict[LabelKey, list[str] | None] = dict.fromkeys(missing)
            for chunk in _chunks(missing, 200):
                stmt = (
                    select(Adapter.tenant_id, Adapter.name, AdapterVersion.version, AdapterVersion.labels)
                    .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                    .where(or_(*(and_(Adapter.tenant_id == t, Adapter.name == n,
                                      AdapterVersion.version == v) for t, n, v in chunk)))
                )
                for t, n, v, labels in session.execute(stmt):
                    found[(t, n, v)] = list(labels) if labels else None
            if len(self._cache) + len(found) > self.max_entries:
                self._cache.clear()
            self._cache.update(found)  # unknown versions are cached as None: they cannot appear later
        return {k: self._cache[k] for k in wanted}


def write_feedback(session: Session, submissions: Sequence[Submission],
                   label_sets: LabelSets | None = None, quota: Quota | None = None,
                   counts: TenantCounts | None = None
                   ) -> list[list[StoredFeedback] | TuneloopError]:
    """Store ``submissions`` in ``session``'s transaction: batched lookups, one multi-row insert.

    Returns per submission its stored items or the error rejecting it (NotFound, InvalidInput,
    Forbidden over ``quota``, checked against ``counts``: default a fresh count per call).
    An id stored by another process between the lookup and the insert is skipped by the insert
    (``ON CONFLICT DO NOTHING``) and answered as a resend.
    """
    client_ids = [_client_ids(sub) for sub in submissions]
    keys = [storage_key(sub.tenant_id, cid) for sub, ids in zip(submissions, client_ids) for cid in ids]
    existing: dict[str, str] = {}
    for chunk in _chunks(sorted(set(keys))):
        existing.update((key, rid) for key, rid in session.execute(
            select(FeedbackRecord.id, FeedbackRecord.response_id).where(FeedbackRecord.id.in_(chunk))
        ))
    response_ids = sorted({item.response_id for sub in submissions for item in sub.items})
    responses: dict[str, ResponseInfo] = {}
    for chunk in _chunks(response_ids):
        for rid, tenant_id, adapter, version in session.execute(
            select(RequestRecord.id, RequestRecord.tenant_id, RequestRecord.adapter,
                   RequestRecord.adapter_version).where(RequestRecord.id.in_(chunk))
        ):
            responses[rid] = ResponseInfo(tenant_id, adapter, version)
    label_keys = {
        (sub.tenant_id, r.adapter, r.adapter_version)
        for sub in submissions for item in sub.items if item.label is not None
        for r in [responses.get(item.response_id)]
        if r is not None and r.tenant_id == sub.tenant_id and r.adapter and r.adapter_version
    }
    labels = (label_sets or LabelSets()).lookup(session, label_keys) if label_keys else {}
    stored = None
    if quota is not None:
        counts = counts or TenantCounts(count_feedback, ttl_s=0)
        stored = counts.current(session, {sub.tenant_id for sub in submissions})
    outcomes, rows = plan_feedback(submissions, client_ids, existing, responses, labels,
                                   quota, stored)
    if not rows:
        return outcomes
    inserted = _insert_new(session, rows)
    if counts is not None:
        for row in rows:
            if row["id"] in inserted:
                counts.add(row["tenant_id"], 1)
    if len(inserted) == len(rows):
        return outcomes
    # Another process stored some of these ids since the lookup: a resend, as far as we know.
    return [
        o if isinstance(o, TuneloopError) else [
            s if not s.created or storage_key(sub.tenant_id, s.id) in inserted
            else StoredFeedback(s.id, s.response_id, created=False) for s in o]
        for sub, o in zip(submissions, outcomes)
    ]


def _insert_new(session: Session, rows: list[dict]) -> set[str]:
    """Insert ``rows``, skipping ids that exist by now; returns the ids inserted."""
    dialect = session.get_bind().dialect.name
    stmt: Insert
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(FeedbackRecord).on_conflict_do_nothing(index_elements=["id"])
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(FeedbackRecord).on_conflict_do_nothing(index_elements=["id"])
    else:  # pragma: no cover - the settings accept only these two
        raise InvalidInput(f"feedback needs SQLite or PostgreSQL, not {dialect}")
    return set(session.scalars(stmt.returning(FeedbackRecord.id), rows))


def record_feedback(session: Session, tenant: Tenant, item: FeedbackIn) -> StoredFeedback:
    """Store one item (raises NotFound / InvalidInput); for scripts and tests."""
    outcome = write_feedback(session, [Submission(tenant.id, [item])])[0]
    if isinstance(outcome, TuneloopError):
        raise outcome
    return outcome[0]


class FeedbackBatcher:
    """Group commit: the feedback of concurrent requests is written in one transaction.

    ``submit`` returns after the commit (an acknowledged event is durable). One request's bad
    item fails that request only; a store error fails every request of the group. The writer
    task lives on the loop of the latest ``submit`` (an app may be served from several loops).
    """

    def __init__(self, store: Store, max_items: int = 5000, offload: Callable | None = None,
                 max_pending_items: int = 50_000, quota: Quota | None = None) -> None:
        from starlette.concurrency import run_in_threadpool

        self.store = store
        self.max_items = max_items
        self.max_pending_items = max_pending_items
        """Items waiting for the writer; beyond it ``submit`` answers 429 (memory stays bounded
        when the store is slower than the clients)."""
        self.pending_items = 0
        self.labels = LabelSets()
        self.quota = quota
        """Records per tenant (TUNELOOP_TENANT_MAX_FEEDBACK_RECORDS); None: unlimited."""
        self.counts = TenantCounts(count_feedback)
        self._offload = offload or run_in_threadpool
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, submission: Submission) -> list[StoredFeedback]:
        """Store one request's items; raises its NotFound / InvalidInput, or the store's error."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._queue, self._task = loop, asyncio.Queue(), None
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="feedback-writer")
        items = len(submission.items)
        if self.pending_items + items > self.max_pending_items:
            raise RateLimited(f"{self.pending_items} feedback items are waiting to be stored; "
                              "retry in a moment", retry_after_s=1.0)
        future = loop.create_future()
        self.pending_items += items
        self._queue.put_nowait((submission, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0].items)
            while not self._queue.empty() and size < self.max_items:
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0].items)
            self.pending_items -= size
            try:
                outcomes = await self._offload(self._write, [sub for sub, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the store failed: every waiter learns it
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _write(self, submissions: list[Submission]) -> list:
        with self.store.write() as session:
            return write_feedback(session, submissions, self.labels, self.quota, self.counts)
