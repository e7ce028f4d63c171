"""A watched background task that dies is logged at once and its reason kept for /readyz."""

from __future__ import annotations

import asyncio
import logging

from services.errors import InvalidInput
from serving.gateway.background import TaskWatch


async def _fail(exc: BaseException) -> None:
    raise exc


async def _watch_all(watch: TaskWatch) -> None:
    tasks = [
        watch.watch(asyncio.create_task(_fail(InvalidInput("no model; run `import`"))), "engine"),
        watch.watch(asyncio.create_task(_fail(RuntimeError("boom"))), "poller"),
        watch.watch(asyncio.create_task(asyncio.sleep(60)), "sleeper"),
        watch.watch(asyncio.create_task(asyncio.sleep(0)), "finisher"),
    ]
    tasks[2].cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration


def test_failures_are_logged_and_kept_cancellation_and_success_are_not(caplog):
    watch = TaskWatch()
    assert watch.failure() is None
    with caplog.at_level(logging.ERROR, logger="tuneloop"):
        asyncio.run(_watch_all(watch))
    assert watch.failures == {"engine": "no model; run `import`", "poller": "RuntimeError: boom"}
    assert watch.failure() == "engine failed: no model; run `import`"
    records = {r.getMessage(): r for r in caplog.records}
    # A TuneloopError says what to do (no traceback); anything else is a bug (with one).
    assert records["engine failed: no model; run `import`"].exc_info is None
    assert records["poller failed: RuntimeError: boom"].exc_info is not None
