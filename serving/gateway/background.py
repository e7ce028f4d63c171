"""Background tasks that must not die silently.

A watched task that fails is logged at once (not when the task is garbage-collected) and its
reason is kept, so ``/readyz`` and the inference routes answer 503 with what to do instead of
"starting" forever.
"""

from __future__ import annotations

import asyncio
import logging

from services.errors import TuneloopError

log = logging.getLogger("tuneloop.gateway")


class TaskWatch:
    """The failures of the tasks given to :meth:`watch`, by what each task does."""

    def __init__(self) -> None:
        self.failures: dict[str, str] = {}

    def watch(self, task: asyncio.Task, what: str) -> asyncio.Task:
        """Log and remember ``task``'s exception when it fails; ``what`` names it in messages
        ("the local engine"). Cancellation is no failure. Returns ``task``."""
        task.add_done_callback(lambda done: self._done(done, what))
        return task

    def _done(self, task: asyncio.Task, what: str) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        # Our errors say what to do; anything else is a bug and gets its traceback.
        if isinstance(exc, TuneloopError):
            reason, exc_info = exc.message, None
        else:
            reason, exc_info = f"{type(exc).__name__}: {exc}", exc
        self.failures[what] = reason
        log.error("%s failed: %s", what, reason, exc_info=exc_info)

    def failure(self) -> str | None:
        """``"<what> failed: <reason>"`` of the first failed task, or None."""
        return next((f"{what} failed: {reason}" for what, reason in self.failures.items()), None)
