"""The request log: every served request, written asynchronously in batches.

``record()`` never blocks and never raises: it appends to a bounded buffer. A writer thread
inserts batches; when the store is slow or down the buffer fills and new records are dropped
and counted (``tuneloop_request_log_dropped``), so requests keep succeeding. ``flush()`` waits
until everything recorded so far is written (used on shutdown and by readers that must see a
just-served response, such as feedback; ``is_pending`` tells them whether they need to).

Per tenant (:class:`LogPolicy`): a sampling rate (a response is kept when a hash of its id falls
under the rate, so the decision is deterministic; a sampled-out response cannot get feedback)
and a retention period (the writer thread deletes older rows periodically). Redaction of inputs
and outputs runs in the writer thread, off the request path.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, insert, select

from monitoring.metrics import Metrics
from services.store.db import Store
from services.store.models import RequestRecord, Tenant, utcnow

if TYPE_CHECKING:
    from services.settings import Settings

log = logging.getLogger("tuneloop.request_log")


def redact_value(value: object) -> object:
    """Mask emails, phone numbers and card numbers in every string inside ``value``."""
    from monitoring.redaction import redact

    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value


TRUNCATED = " [TRUNCATED]"
"""Appended to a logged string that was cut at the request log's size limit."""

# What the request log keeps of a chat message or a content part; every other field (``name``,
# image URLs, ...) is dropped before it is buffered, redacted or stored. Under ``tool_calls``
# and ``function`` only the fields of an OpenAI tool call are kept (``name`` there is the
# function's), so a tool call is logged as id, type, function name and arguments.
_KEPT_FIELDS = frozenset({"role", "content", "type", "text", "tool_calls", "tool_call_id"})
_FIELDS_UNDER: dict[object, frozenset[str]] = {
    "tool_calls": frozenset({"id", "type", "function"}),
    "function": frozenset({"name", "arguments"}),
    "arguments": frozenset(),  # a JSON string; an object here is not OpenAI's format: dropped
}
_ITEM_COST = 8  # characters charged per list item and scalar, so empty items cannot flood the log


def loggable(value: object, max_chars: int) -> object:
    """``value`` (chat messages, a prompt, texts, labels) reduced to what the request log keeps:
    known message fields (with tool calls and ``tool_call_id``) only, at most ``max_chars`` characters in all. A cut string ends with
    :data:`TRUNCATED`; a cut list marks its last kept item (a message gets ``"truncated": true``),
    so the dataset compiler can leave truncated requests out. Costs O(max_chars), not O(value)."""
    return _Shaper(max_chars).shape(value, 0)


class _Shaper:
    MAX_DEPTH = 16  # messages -> message -> content parts -> part is 4 levels deep

    def __init__(self, max_chars: int) -> None:
        self.left = max_chars
        self.cut = False

    def shape(self, value: object, depth: int, fields: frozenset[str] = _KEPT_FIELDS) -> object:
        if isinstance(value, str):
            if len(value) <= self.left:
                self.left -= len(value)
                return value
            head, self.left, self.cut = value[:max(self.left, 0)], 0, True
            return head + TRUNCATED
        if value is None or isinstance(value, bool | int | float):
            self.left -= _ITEM_COST
            return value
        if depth >= self.MAX_DEPTH:
            self.cut = True
            return None
        if isinstance(value, list | tuple):
            out: list[object] = []
            for item in value:
                if self.left <= 0:
                    self.cut = True
                    if out:
                        out[-1] = _mark_truncated(out[-1])
                    break
                self.left -= _ITEM_COST
                out.append(self.shape(item, depth + 1, fields))
            return out
        if isinstance(value, Mapping):
            cut_before = self.cut
            kept: dict[object, object] = {
                k: self.shape(v, depth + 1, _FIELDS_UNDER.get(k, _KEPT_FIELDS))
                for k, v in value.items() if k in fields}
            if self.cut and not cut_before:
                kept["truncated"] = True
            return kept
        return None  # not JSON data: nothing to keep


def _mark_truncated(item: object) -> object:
    if isinstance(item, str):
        return item if item.endswith(TRUNCATED) else item + TRUNCATED
    if isinstance(item, dict):
        return {**item, "truncated": True}
    return item


@dataclass
class LogRecord:
    id: str
    tenant_id: int
    route: str
    status: int
    adapter: str | None = None
    adapter_version: int | None = None
    input: object = None
    output: object = None
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: object = field(default_factory=utcnow)


def sampled_in(response_id: str, rate: float) -> bool:
    """Whether a response is kept at sampling ``rate`` (deterministic in its id)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return zlib.crc32(response_id.encode()) < rate * 2**32


@dataclass(frozen=True)
class LogPolicy:
    """Sampling and retention, with per-tenant overrides keyed by tenant name."""

    sample_rate: float = 1.0
    tenant_sample_rates: Mapping[str, float] = field(default_factory=dict)
    retention_days: float | None = None  # None: keep forever
    tenant_retention_days: Mapping[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, rate in [("*", self.sample_rate), *self.tenant_sample_rates.items()]:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"request log sample rate for {name!r} is {rate}; use 0..1")
        for name, days in [("*", self.retention_days), *self.tenant_retention_days.items()]:
            if days is not None and days <= 0:
                raise ValueError(f"request log retention for {name!r} is {days} days; use > 0 "
                                 "or leave it unset to keep rows forever")

    def rate_for(self, tenant: str | None) -> float:
        return self.tenant_sample_rates.get(tenant, self.sample_rate) if tenant else self.sample_rate

    def retention_for(self, tenant: str) -> float | None:
        return self.tenant_retention_days.get(tenant, self.retention_days)

    @property
    def samples(self) -> bool:
        return self.sample_rate < 1.0 or any(r < 1.0 for r in self.tenant_sample_rates.values())

    @property
    def expires(self) -> bool:
        return self.retention_days is not None or any(
            d is not None for d in self.tenant_retention_days.values())


def purge_expired(store: Store, policy: LogPolicy, now: datetime | None = None) -> int:
    """Delete request-log rows older than their tenant's retention; returns how many."""
    if not policy.expires:
        return 0
    now = now or utcnow()
    deleted = 0
    with store.read() as session:
        tenants = session.execute(select(Tenant.id, Tenant.name)).all()
    for tenant_id, name in tenants:
        days = policy.retention_for(name)
        if days is None:
            continue
        with store.write() as session:
            result = cast("CursorResult[Any]", session.execute(delete(RequestRecord).where(
                RequestRecord.tenant_id == tenant_id,
                RequestRecord.created_at < now - timedelta(days=days))))
            deleted += result.rowcount or 0
    return deleted


class RequestLog:
    """Bounded, batched, non-blocking writer of :class:`LogRecord` rows."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics | None = None,
        *,
        max_pending: int = 50_000,
        batch_size: int = 500,
        flush_interval_s: float = 0.1,
        redact: Callable[[object], object] | None = None,
        policy: LogPolicy | None = None,
        purge_every_s: float = 3600.0,
        max_field_chars: int = 65_536,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.redact = redact
        self.policy = policy or LogPolicy()
        self.purge_every_s = purge_every_s
        self.max_field_chars = max_field_chars
        self._next_purge = 0.0  # the first purge runs when the writer starts
        self._tenant_names: dict[int, str] = {}
        self._pending_ids: set[str] = set()
        self.sampled_out = 0
        self._buffer: deque[LogRecord] = deque()
        self._cond = threading.Condition()
        self._written_seq = 0
        self._recorded_seq = 0
        self._flushers = 0  # threads waiting in flush(): the writer does not wait for more
        self._stop = False
        self._thread: threading.Thread | None = None
        self.dropped = 0

    @classmethod
    def from_settings(cls, store: Store, metrics: Metrics | None, settings: Settings
                      ) -> RequestLog:
        """The request log configured by ``settings`` (sampling, retention, redaction)."""
        policy = LogPolicy(
            sample_rate=settings.request_log_sample_rate,
            tenant_sample_rates=dict(settings.request_log_tenant_sample_rates),
            retention_days=settings.request_log_retention_days,
            tenant_retention_days=dict(settings.request_log_tenant_retention_days),
        )
        return cls(store, metrics, redact=redact_value if settings.request_log_redact else None,
                   policy=policy, max_field_chars=settings.request_log_max_chars)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def record(self, rec: LogRecord) -> bool:
        """Queue ``rec`` (its input and output cut to :func:`loggable`); False (and counted) when
        the buffer is full."""
        rec.input = loggable(rec.input, self.max_field_chars)
        rec.output = loggable(rec.output, self.max_field_chars)
        with self._cond:
            if self._stop or len(self._buffer) >= self.max_pending:
                self._count_drop("shutdown" if self._stop else "buffer_full")
                return False
            self._buffer.append(rec)
            self._pending_ids.add(rec.id)
            self._recorded_seq += 1
            if len(self._buffer) == 1 or len(self._buffer) == self.batch_size:
                self._cond.notify()
        return True

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def is_pending(self, response_ids: Iterable[str]) -> bool:
        """Whether any of ``response_ids`` is recorded but not yet written (or dropped)."""
        with self._cond:
            return not self._pending_ids.isdisjoint(response_ids)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued before this call is written (or dropped)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._recorded_seq
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._written_seq < target:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._thread is None:
                        return False
                    self._cond.wait(min(left, 0.05))
            finally:
                self._flushers -= 1
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (waiting up to ``timeout_s``), then stop the writer. Records
        still buffered after that, or recorded after the stop, are dropped and counted."""
        self.flush(timeout_s)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout_s)
            self._thread = None
        with self._cond:
            left = list(self._buffer)
            self._buffer.clear()
            self._written_seq += len(left)
            self._pending_ids.difference_update(rec.id for rec in left)
        if left:
            log.warning("request log: %d records were not written before shutdown", len(left))
            self._count_drop("shutdown", len(left))

    def _count_drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        if self.metrics:
            self.metrics.request_log_dropped.labels(reason).inc(n)

    def _take_batch(self) -> list[LogRecord]:
        """The next batch: waits for a first record, then up to ``flush_interval_s`` for more
        (a full batch, a flush or a stop end the wait), so the writer runs a few times a second
        instead of once per request, off the request path's GIL time. Empty after 1 s idle."""
        with self._cond:
            if not self._buffer and not self._stop:
                self._cond.wait(1.0)  # record() notifies on the first record
            deadline = time.monotonic() + self.flush_interval_s
            while self._buffer and len(self._buffer) < self.batch_size and not self._stop \
                    and not self._flushers:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch: list[LogRecord] = []
            while self._buffer and len(batch) < self.batch_size:
                batch.append(self._buffer.popleft())
            return batch

    def _run(self) -> None:
        failures = 0
        while True:
            self._maybe_purge()
            batch = self._take_batch()
            if not batch:
                if self._stop:
                    return
                continue
            try:
                rows = [self._row(rec) for rec in self._sample(batch)]
                if rows:
                    with self.store.write() as session:
                        session.execute(insert(RequestRecord), rows)
                failures = 0
                if self.metrics and rows:
                    self.metrics.request_log_written.inc(len(rows))
            except Exception as exc:  # noqa: BLE001 - the store may be down; count, never raise
                failures += 1
                log.warning("request log: dropping %d records, store write failed: %s", len(rows), exc)
                self._count_drop("store_error", len(batch))
                time.sleep(min(5.0, 0.1 * 2**failures))
            finally:
                with self._cond:
                    self._written_seq += len(batch)
                    self._pending_ids.difference_update(rec.id for rec in batch)
                    self._cond.notify_all()
                if self.metrics:
                    self.metrics.request_log_pending.set(len(self._buffer))

    def _sample(self, batch: list[LogRecord]) -> list[LogRecord]:
        if not self.policy.samples:
            return batch
        unknown = {rec.tenant_id for rec in batch} - self._tenant_names.keys()
        if unknown:  # tenants are never renamed: a name once seen stays valid
            with self.store.read() as session:
                self._tenant_names.update(
                    session.execute(select(Tenant.id, Tenant.name).where(Tenant.id.in_(unknown))).all())
        kept = [rec for rec in batch
                if sampled_in(rec.id, self.policy.rate_for(self._tenant_names.get(rec.tenant_id)))]
        self.sampled_out += len(batch) - len(kept)
        if self.metrics and len(kept) < len(batch):
            self.metrics.request_log_sampled_out.inc(len(batch) - len(kept))
        return kept

    def _maybe_purge(self) -> None:
        if not self.policy.expires or time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.purge_every_s
        try:
            deleted = purge_expired(self.store, self.policy)
        except Exception as exc:  # noqa: BLE001 - retried at the next period
            log.warning("request log: retention purge failed: %s", exc)
            return
        if deleted:
            log.info("request log: deleted %d rows past their retention", deleted)
            if self.metrics:
                self.metrics.request_log_expired.inc(deleted)

    def _row(self, rec: LogRecord) -> dict:
        row = dict(vars(rec))  # shallow: dataclasses.asdict deep-copies (~25 us a record)
        if self.redact is not None:
            row["input"] = self.redact(row["input"])
            row["output"] = self.redact(row["output"])
        return row
