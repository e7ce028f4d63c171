"""The request log: every served request, written asynchronously in batches.

``record()`` never blocks and never raises: it appends to a bounded buffer. A writer thread
inserts batches; when the store is slow or down the buffer fills and new records are dropped
and counted (``tuneloop_request_log_dropped``), so requests keep succeeding. ``flush()`` waits
until everything recorded so far is written (used on shutdown and by readers that must see a
just-served response, such as feedback).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from sqlalchemy import insert

from monitoring.metrics import Metrics
from services.store.db import Store
from services.store.models import RequestRecord, utcnow

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
    ):
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.redact = redact
        self._buffer: deque[LogRecord] = deque()
        self._cond = threading.Condition()
        self._written_seq = 0
        self._recorded_seq = 0
        self._stop = False
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def record(self, rec: LogRecord) -> bool:
        """Queue ``rec``; False (and counted) when the buffer is full."""
        with self._cond:
            if len(self._buffer) >= self.max_pending:
                self.dropped += 1
                if self.metrics:
                    self.metrics.request_log_dropped.labels("buffer_full").inc()
                return False
            self._buffer.append(rec)
            self._recorded_seq += 1
            self._cond.notify()
        return True

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued before this call is written (or dropped)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._recorded_seq
            self._cond.notify_all()
            while self._written_seq < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def stop(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout_s)
            self._thread = None

    def _take_batch(self) -> list[LogRecord]:
        with self._cond:
            while not self._buffer and not self._stop:
                self._cond.wait(self.flush_interval_s)
            batch = []
            while self._buffer and len(batch) < self.batch_size:
                batch.append(self._buffer.popleft())
            return batch

    def _run(self) -> None:
        failures = 0
        while True:
            batch = self._take_batch()
            if not batch:
                if self._stop:
                    return
                continue
            rows = [self._row(rec) for rec in batch]
            try:
                with self.store.write() as session:
                    session.execute(insert(RequestRecord), rows)
                failures = 0
                if self.metrics:
                    self.metrics.request_log_written.inc(len(rows))
            except Exception as exc:  # noqa: BLE001 - the store may be down; count, never raise
                failures += 1
                log.warning("request log: dropping %d records, store write failed: %s", len(rows), exc)
                self.dropped += len(rows)
                if self.metrics:
                    self.metrics.request_log_dropped.labels("store_error").inc(len(rows))
                time.sleep(min(5.0, 0.1 * 2**failures))
            finally:
                with self._cond:
                    self._written_seq += len(batch)
                    self._cond.notify_all()
                if self.metrics:
                    self.metrics.request_log_pending.set(len(self._buffer))

    def _row(self, rec: LogRecord) -> dict:
        row = asdict(rec)
        if self.redact is not None:
            row["input"] = self.redact(row["input"])
            row["output"] = self.redact(row["output"])
        return row
