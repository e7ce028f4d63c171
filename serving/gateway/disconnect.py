"""Cancel the engine work of a request whose client hung up.

uvicorn does not cancel a handler when its client disconnects; without this, a non-streaming
request would keep the engine generating (and hold its tenant slot) for a reply nobody reads.
Cancelling the engine call closes its connection, which makes vLLM abort the generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

T = TypeVar("T")

CLIENT_CLOSED_STATUS = 499
"""Status recorded in metrics for a request whose client left first (nginx's convention)."""


class ClientGone(Exception):
    """The client disconnected before the response was ready; its engine work was cancelled."""


async def cancel_on_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise :class:`ClientGone`.

    Call after the request body was read: from then on the server's next message can only be
    ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if gone and not _cancelling():
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


def _cancelling() -> bool:
    """True if the current task itself is being cancelled (not only the work it awaited)."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
