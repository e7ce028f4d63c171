"""Logging of the long-running commands (``serve``, ``monitor``): the log lines of tuneloop's
packages on stderr at TUNELOOP_LOG_LEVEL, beside uvicorn's own. Without it Python prints only
warnings and errors, bare, and nothing at info level (engine started, adapter loaded, ...)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

PACKAGES = ("tuneloop", "services", "serving", "monitoring", "training")
HANDLER_NAME = "tuneloop-stderr"


class _Stderr(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at setup: test runners swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def _ours(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in PACKAGES


def configure_logging(level: str) -> None:
    """Print tuneloop's log records at ``level`` ("debug" ... "error") and above on stderr.

    One handler on the root logger, for tuneloop's packages only, so records still propagate
    (other handlers, pytest's caplog); calling it again replaces it.
    """
    handler = _Stderr()
    handler.set_name(HANDLER_NAME)
    handler.addFilter(_ours)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(level.upper())
