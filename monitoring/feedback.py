"""Feedback on served responses: validation and idempotent storage (tenant-scoped).

A feedback ``id`` chosen by the client makes a submission idempotent: sending it again returns
the stored record and changes nothing. Ids are scoped per tenant.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.errors import InvalidInput, NotFound
from services.store.models import Adapter, AdapterVersion, FeedbackRecord, RequestRecord, Tenant


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


def _key(tenant: Tenant, client_id: str) -> str:
    return f"t{tenant.id}:{client_id}"


def record_feedback(session: Session, tenant: Tenant, item: FeedbackIn) -> StoredFeedback:
    """Store ``item`` once. NotFound for unknown or foreign responses, InvalidInput for a label
    outside the adapter's label set."""
    client_id = item.id or uuid.uuid4().hex
    key = _key(tenant, client_id)
    existing = session.get(FeedbackRecord, key)
    if existing is not None:
        return StoredFeedback(client_id, existing.response_id, created=False)
    response = session.get(RequestRecord, item.response_id)
    if response is None or response.tenant_id != tenant.id:
        raise NotFound(f"response {item.response_id!r} does not exist", param="response_id")
    if item.label is not None:
        labels = _labels_of(session, tenant, response)
        if labels is None:
            raise InvalidInput(
                f"response {item.response_id!r} was not served by a classification adapter; "
                "send a rating or a correction instead of a label", param="label",
            )
        if item.label not in labels:
            raise InvalidInput(
                f"label {item.label!r} is not one of the adapter's labels {labels}", param="label"
            )
    row = FeedbackRecord(
        id=key, tenant_id=tenant.id, response_id=item.response_id, adapter=response.adapter,
        adapter_version=response.adapter_version, rating=item.rating, label=item.label,
        correction=item.correction, comment=item.comment,
    )
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # a concurrent duplicate won the race: same outcome as a resend
        return StoredFeedback(client_id, item.response_id, created=False)
    return StoredFeedback(client_id, item.response_id, created=True)


def _labels_of(session: Session, tenant: Tenant, response: RequestRecord) -> list[str] | None:
    if response.adapter is None:
        return None
    version = session.scalar(
        select(AdapterVersion)
        .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
        .where(Adapter.tenant_id == tenant.id, Adapter.name == response.adapter,
               AdapterVersion.version == response.adapter_version)
    )
    return version.labels if version is not None else None


def feedback_kinds(item: FeedbackIn) -> list[str]:
    return [k for k in ("rating", "label", "correction", "comment") if getattr(item, k) is not None]


class FeedbackBatcher:
    """Group commit: concurrent feedback requests are written in one transaction.

    Each request's items are applied in their own savepoint, so one request's error (unknown
    response, bad label) fails that request only. ``submit`` returns after the commit: an
    acknowledged event is durable.
    """

    def __init__(self, store, max_batch: int = 256):
        import asyncio

        self.store = store
        self.max_batch = max_batch
        self._queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def submit(self, tenant: Tenant, items: list[FeedbackIn]) -> list[StoredFeedback]:
        import asyncio

        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="feedback-writer")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((tenant, items, future))
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        from starlette.concurrency import run_in_threadpool

        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and sum(len(b[1]) for b in batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
            try:
                outcomes = await run_in_threadpool(self._write, batch)
            except Exception as exc:  # noqa: BLE001 - the store failed: every waiter learns it
                outcomes = [exc] * len(batch)
            for (_, _, future), outcome in zip(batch, outcomes):
                if future.done():
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _write(self, batch: list) -> list:
        outcomes: list = []
        with self.store.write() as session:
            for tenant, items, _ in batch:
                try:
                    with session.begin_nested():
                        outcomes.append([record_feedback(session, tenant, item) for item in items])
                except (InvalidInput, NotFound) as exc:
                    outcomes.append(exc)
        return outcomes
