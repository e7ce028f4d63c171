"""The request log on a real SQLite store: batching, flush on stop, drops counted exactly when the
store fails, recovery, per-tenant sampling and retention, redaction on by default."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select

from monitoring.metrics import Metrics
from monitoring.request_log import (
    TRUNCATED,
    LogPolicy,
    LogRecord,
    RequestLog,
    loggable,
    purge_expired,
    sampled_in,
)
from services.settings import Settings
from services.store.db import Store
from services.store.models import RequestRecord, utcnow
from services.tenants import create_tenant


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'log.db'}")
    s.migrate()
    with s.write() as session:
        for name in ("acme", "globex"):
            create_tenant(session, name)
    yield s
    s.close()


def _ids(store: Store, tenant_id: int | None = None) -> set[str]:
    with store.read() as s:
        q = select(RequestRecord.id)
        if tenant_id is not None:
            q = q.where(RequestRecord.tenant_id == tenant_id)
        return set(s.scalars(q))


def _rec(i: int | str, tenant_id: int = 1, text: str = "hello") -> LogRecord:
    return LogRecord(id=f"r{i}", tenant_id=tenant_id, route="chat", status=200, adapter="a",
                     adapter_version=1, input=[{"role": "user", "content": text}], output="ok")


class FlakyStore:
    """The real store whose writes fail (``down``) or block (``gate`` cleared) on demand."""

    def __init__(self, store: Store):
        self.store = store
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def read(self):
        return self.store.read()

    @contextmanager
    def write(self):
        self.gate.wait()
        if self.down:
            raise ConnectionError("store unavailable (injected)")
        with self.store.write() as session:
            yield session


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_records_are_written_in_batches_and_flushed_on_stop(store):
    log = RequestLog(store, Metrics(), batch_size=50, flush_interval_s=5.0)
    log.start()
    for i in range(120):
        assert log.record(_rec(i))
    log.stop()  # writes everything still buffered before returning
    assert _ids(store) == {f"r{i}" for i in range(120)}
    assert log.dropped == 0 and log.pending == 0


def test_failing_store_never_blocks_record_and_drops_are_counted_exactly(store):
    flaky, metrics = FlakyStore(store), Metrics()
    log = RequestLog(flaky, metrics, max_pending=10, batch_size=4, flush_interval_s=0.01)
    log.start()
    flaky.gate.clear()  # the store hangs: the writer blocks inside its first write
    accepted = [log.record(_rec(i)) for i in range(40)]  # returns at once although the store hangs
    assert sum(accepted) <= 10 + 4 and not all(accepted)
    flaky.down = True
    flaky.gate.set()  # ...then fails every write
    assert log.flush(10)
    assert _ids(store) == set()
    assert log.dropped == 40
    dropped = (_metric(metrics, "tuneloop_request_log_dropped_total", reason="buffer_full")
               + _metric(metrics, "tuneloop_request_log_dropped_total", reason="store_error"))
    assert dropped == 40
    flaky.down = False  # the store comes back: logging resumes
    time.sleep(0.5)  # past the writer's backoff
    for i in range(40, 45):
        log.record(_rec(i))
    assert log.flush(15)
    log.stop()
    assert _ids(store) == {f"r{i}" for i in range(40, 45)}
    assert _metric(metrics, "tuneloop_request_log_written_total") == 5


def test_is_pending_until_written(store):
    flaky = FlakyStore(store)
    log = RequestLog(flaky, flush_interval_s=0.01)
    log.start()
    flaky.gate.clear()
    log.record(_rec("x"))
    assert log.is_pending(["nope", "rx"]) and not log.is_pending(["nope"])
    flaky.gate.set()
    assert log.flush(10)
    assert not log.is_pending(["rx"])
    log.stop()


def test_redaction_is_on_by_default_and_can_be_turned_off(store, tmp_path):
    on = RequestLog.from_settings(store, None, Settings(data_dir=tmp_path))
    on.start()
    on.record(_rec("on", text="mail jane.doe@example.com or call +1 415 555 0100"))
    on.stop()
    off = RequestLog.from_settings(store, None, Settings(data_dir=tmp_path, request_log_redact=False))
    off.start()
    off.record(_rec("off", text="mail jane.doe@example.com"))
    off.stop()
    with store.read() as s:
        logged = {r.id: r.input[0]["content"] for r in s.scalars(select(RequestRecord))}
    assert logged["ron"] == "mail [EMAIL] or call [PHONE]"
    assert logged["roff"] == "mail jane.doe@example.com"


def test_sampling_is_deterministic_and_close_to_the_rate():
    ids = [f"chatcmpl-{i:06d}" for i in range(20_000)]
    kept = [i for i in ids if sampled_in(i, 0.3)]
    assert 0.28 < len(kept) / len(ids) < 0.32
    assert kept == [i for i in ids if sampled_in(i, 0.3)]
    assert all(sampled_in(i, 1.0) for i in ids[:100]) and not any(sampled_in(i, 0.0) for i in ids[:100])


def test_per_tenant_sampling_rate(store, tmp_path):
    settings = Settings(data_dir=tmp_path, request_log_sample_rate=0.5,
                        request_log_tenant_sample_rates={"acme": 1.0, "globex": 0.0})
    metrics = Metrics()
    log = RequestLog.from_settings(store, metrics, settings)
    log.start()
    for i in range(200):
        log.record(_rec(f"a{i}", tenant_id=1))
        log.record(_rec(f"g{i}", tenant_id=2))
        log.record(_rec(f"u{i}", tenant_id=99))  # a tenant without an override: the default rate
    log.stop()
    assert len(_ids(store, 1)) == 200
    assert _ids(store, 2) == set()
    unknown = _ids(store, 99)
    assert unknown == {f"ru{i}" for i in range(200) if sampled_in(f"ru{i}", 0.5)}
    assert log.sampled_out == 200 + (200 - len(unknown))
    assert _metric(metrics, "tuneloop_request_log_sampled_out_total") == log.sampled_out
    assert log.dropped == 0


def test_retention_deletes_old_rows_per_tenant(store):
    now = utcnow()
    with store.write() as s:
        for tenant_id in (1, 2):
            for age_days in (1, 5, 40):
                s.add(RequestRecord(id=f"t{tenant_id}-{age_days}d", tenant_id=tenant_id, route="chat",
                                    status=200, created_at=now - timedelta(days=age_days)))
    policy = LogPolicy(retention_days=30, tenant_retention_days={"acme": 3})
    assert purge_expired(store, policy, now=now) == 3
    assert _ids(store) == {"t1-1d", "t2-1d", "t2-5d"}
    assert purge_expired(store, LogPolicy(), now=now) == 0  # no retention: kept forever


def test_the_writer_applies_retention(store):
    with store.write() as s:
        s.add(RequestRecord(id="old", tenant_id=1, route="chat", status=200,
                            created_at=utcnow() - timedelta(days=10)))
    log = RequestLog(store, Metrics(), policy=LogPolicy(retention_days=7), flush_interval_s=0.01)
    log.start()
    log.record(_rec("new"))
    log.stop()
    assert _ids(store) == {"rnew"}


def test_bad_policy_values_say_what_to_do():
    with pytest.raises(ValueError, match="use 0..1"):
        LogPolicy(tenant_sample_rates={"acme": 1.5})
    with pytest.raises(ValueError, match="keep rows forever"):
        LogPolicy(retention_days=0)


def test_entries_that_cannot_be_written_by_shutdown_are_counted(store):
    flaky, metrics = FlakyStore(store), Metrics()
    log = RequestLog(flaky, metrics, flush_interval_s=0.01)
    log.start()
    flaky.gate.clear()  # the store hangs through the whole shutdown
    for i in range(5):
        log.record(_rec(i))
    time.sleep(0.1)  # the writer has taken the first batch and hangs in the store
    log.record(_rec("late"))
    log.stop(timeout_s=0.5)
    assert not log.record(_rec("after-stop"))
    shutdown = _metric(metrics, "tuneloop_request_log_dropped_total", reason="shutdown")
    assert shutdown >= 2, "the late record and the one after the stop"
    flaky.gate.set()  # the hung write completes after all
    time.sleep(0.5)
    assert len(_ids(store)) + shutdown == 7, "every record is either stored or counted"


def test_only_known_message_fields_are_logged_and_long_inputs_are_cut():
    messages = [{"role": "user", "content": "hi", "name": "n" * 10_000, "audio": [1]},
                {"role": "user", "content": [{"type": "text", "text": "look"},
                                             {"type": "image_url", "image_url": {"url": "http://x"}}]}]
    assert loggable(messages, 1000) == [
        {"role": "user", "content": "hi"},
        {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url"}]}]
    cut = loggable([{"role": "user", "content": "x" * 5000}, {"role": "user", "content": "y"}], 300)
    assert cut == [{"role": "user", "content": "x" * (300 - 8 - 4) + TRUNCATED, "truncated": True}]
    assert loggable("z" * 500, 256) == "z" * 256 + TRUNCATED
    many = loggable([""] * 100_000, 256)  # empty items cost too: no flood of empty strings
    assert isinstance(many, list) and len(many) <= 32 and many[-1] == TRUNCATED
    assert loggable([[1, 2], [3]], 256) == [[1, 2], [3]]


def test_tool_calls_are_logged_cut_and_redacted_and_their_other_fields_dropped(store, tmp_path):
    calls = [{"id": "call_1", "type": "function", "extra": "dropped",
              "function": {"name": "email", "arguments": '{"to": "jane.doe@example.com"}',
                           "strict": True}}]
    messages = [{"role": "user", "content": "mail jane", "name": "jane"},
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "call_1", "content": "sent", "name": "email"}]
    reply = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_2", "type": "function",
         "function": {"name": "email", "arguments": '{"body": "' + "x" * 5000 + '"}'}}]}
    assert loggable(messages, 1000) == [
        {"role": "user", "content": "mail jane"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "email", "arguments": '{"to": "jane.doe@example.com"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sent"}]
    # Only a JSON string is kept as arguments; an object there (not OpenAI's format) is emptied.
    assert loggable([{"tool_calls": [{"function": {"arguments": {"a": {"b": 1}}}}]}], 100) == [
        {"tool_calls": [{"function": {"arguments": {}}}]}]
    cut = loggable(reply, 300)
    assert cut["truncated"] is True
    assert cut["tool_calls"][0]["function"]["arguments"].endswith(TRUNCATED)

    log = RequestLog.from_settings(store, None, Settings(data_dir=tmp_path))
    log.start()
    log.record(LogRecord(id="tools", tenant_id=1, route="chat", status=200, input=messages,
                         output=reply))
    log.stop()
    with store.read() as s:
        row = s.scalars(select(RequestRecord)).one()
    assert row.input[1]["tool_calls"][0]["function"] == {
        "name": "email", "arguments": '{"to": "[EMAIL]"}'}
    assert row.input[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sent"}
    assert row.output["tool_calls"][0]["function"]["name"] == "email"
    assert row.output["tool_calls"][0]["id"] == "call_2"


def test_an_eight_megabyte_hostile_chat_is_logged_cut_and_redacted_within_a_second(store, tmp_path):
    log = RequestLog.from_settings(store, None, Settings(data_dir=tmp_path))
    hostile = [{"role": "user", "content": "a" * 4_000_000 + "@", "name": "b" * 4_000_000 + "@"}]
    log.start()
    start = time.perf_counter()
    log.record(LogRecord(id="big", tenant_id=1, route="chat", status=200, input=hostile, output="ok"))
    assert log.flush(10)
    assert time.perf_counter() - start < 1.0
    log.stop()
    with store.read() as s:
        (logged,) = s.scalars(select(RequestRecord.input)).all()
    assert logged[0].keys() == {"role", "content", "truncated"}
    assert len(logged[0]["content"]) == 65_536 - 8 - 4 + len(TRUNCATED)
