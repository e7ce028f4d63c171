"""plan_feedback, the pure decision part of feedback storage: outcomes per request, rows to insert."""

from __future__ import annotations

import asyncio
import threading

import pytest

from monitoring.feedback import (
    FeedbackBatcher,
    FeedbackIn,
    ResponseInfo,
    Submission,
    plan_feedback,
    storage_key,
)
from services.errors import InvalidInput, NotFound, RateLimited

RESPONSES = {
    "chat-1": ResponseInfo(tenant_id=1, adapter=None, adapter_version=None),
    "clf-1": ResponseInfo(tenant_id=1, adapter="intent", adapter_version=2),
    "other-tenant": ResponseInfo(tenant_id=2, adapter=None, adapter_version=None),
}
LABELS = {(1, "intent", 2): ["billing", "tech"]}


def _fb(response_id: str, fid: str, **kw: object) -> FeedbackIn:
    return FeedbackIn(response_id=response_id, id=fid, **({"rating": 1} | kw))


def _plan(subs: list[Submission], existing: dict[str, str] | None = None):
    ids = [[item.id for item in sub.items] for sub in subs]
    return plan_feedback(subs, ids, existing or {}, RESPONSES, LABELS)


def test_each_id_is_created_once_within_and_across_requests():
    a = Submission(1, [_fb("chat-1", "x"), _fb("chat-1", "x"), _fb("chat-1", "y")], bulk=True)
    b = Submission(1, [_fb("chat-1", "y")])
    outcomes, rows = _plan([a, b])
    assert [s.created for s in outcomes[0]] == [True, False, True]
    assert [s.created for s in outcomes[1]] == [False]
    assert [r["id"] for r in rows] == [storage_key(1, "x"), storage_key(1, "y")]


def test_a_request_over_the_tenant_quota_is_refused_whole_within_a_batch():
    from services.errors import Forbidden
    from services.quotas import Quota

    quota = Quota("feedback records", 3, "TUNELOOP_TENANT_MAX_FEEDBACK_RECORDS", "Ask.")
    subs = [Submission(1, [_fb("chat-1", "a"), _fb("chat-1", "b")], bulk=True),
            Submission(1, [_fb("chat-1", "c"), _fb("chat-1", "d")], bulk=True),
            Submission(1, [_fb("chat-1", "a"), _fb("chat-1", "e")], bulk=True),
            Submission(2, [_fb("other-tenant", "a")])]
    outcomes, rows = plan_feedback(subs, [[i.id for i in s.items] for s in subs], {}, RESPONSES,
                                   LABELS, quota, {1: 1, 2: 0})
    assert [s.created for s in outcomes[0]] == [True, True]
    assert isinstance(outcomes[1], Forbidden) and "you have 3 feedback records" in (
        outcomes[1].message), "1 stored + 2 of this batch"
    assert isinstance(outcomes[2], Forbidden), "one new record is one too many"
    assert [s.created for s in outcomes[3]] == [True], "another tenant has its own quota"
    assert [r["id"] for r in rows] == ["t1:a", "t1:b", "t2:a"]


def test_ids_are_scoped_per_tenant():
    outcomes, rows = _plan([Submission(1, [_fb("chat-1", "x")]), Submission(2, [_fb("other-tenant", "x")])])
    assert [o[0].created for o in outcomes] == [True, True]
    assert {r["id"] for r in rows} == {"t1:x", "t2:x"}


def test_a_rejected_request_stores_nothing_and_takes_no_ids():
    bad = Submission(1, [_fb("chat-1", "x"), _fb("nope", "z"), _fb("clf-1", "w", label="weather")], bulk=True)
    later = Submission(1, [_fb("chat-1", "x")])
    outcomes, rows = _plan([bad, later])
    err = outcomes[0]
    assert isinstance(err, InvalidInput)
    assert "data[1]" in err.message and "'nope'" in err.message
    assert "data[2]" in err.message and "'weather'" in err.message and "data[0]" not in err.message
    assert outcomes[1][0].created is True, "the rejected request did not claim id x"
    assert [r["id"] for r in rows] == ["t1:x"]


def test_unknown_and_foreign_responses_are_not_found():
    outcomes, rows = _plan([Submission(1, [_fb("nope", "a")]), Submission(1, [_fb("other-tenant", "b")])])
    assert all(isinstance(o, NotFound) for o in outcomes) and rows == []
    assert outcomes[0].param == "response_id"


def test_labels_are_checked_against_the_adapter_version():
    outcomes, rows = _plan([
        Submission(1, [_fb("clf-1", "a", label="tech")]),
        Submission(1, [_fb("chat-1", "b", label="tech")]),
    ])
    assert outcomes[0][0].created and rows[0]["adapter"] == "intent" and rows[0]["adapter_version"] == 2
    assert isinstance(outcomes[1], InvalidInput) and "classification" in outcomes[1].message


def test_a_resend_of_a_stored_id_is_answered_without_revalidation():
    existing = {"t1:a": "clf-1"}
    outcomes, rows = _plan([Submission(1, [_fb("clf-1", "a", label="no-longer-valid")])], existing)
    assert outcomes[0][0].created is False and outcomes[0][0].response_id == "clf-1"
    assert rows == []


def test_the_writer_queue_is_bounded_in_items_and_answers_429_beyond_it():
    release = threading.Event()

    async def slow_store(write, submissions):  # noqa: ANN001, ANN202 - a store that stalls
        await asyncio.to_thread(release.wait, 10)
        return [[] for _ in submissions]

    batcher = FeedbackBatcher(store=None, offload=slow_store, max_pending_items=5)  # type: ignore[arg-type]

    async def run():
        first = asyncio.create_task(batcher.submit(Submission(1, [_fb("chat-1", "x")])))
        await asyncio.sleep(0.05)  # taken by the writer, which is now stuck in the store
        queued = [asyncio.create_task(batcher.submit(Submission(1, [_fb("chat-1", "x")] * 2)))
                  for _ in range(2)]
        await asyncio.sleep(0.05)
        assert batcher.pending_items == 4
        try:
            with pytest.raises(RateLimited, match="waiting to be stored"):
                await batcher.submit(Submission(1, [_fb("chat-1", "x")] * 2))
        finally:
            release.set()
        await asyncio.gather(first, *queued)
        assert batcher.pending_items == 0
        await batcher.close()

    asyncio.run(run())
