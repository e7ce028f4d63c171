"""The log setup of ``serve`` and ``monitor``: tuneloop's records on stderr at the set level."""

from __future__ import annotations

import logging

import pytest

from tuneloop.cli.logs import HANDLER_NAME, PACKAGES, configure_logging


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, levels = list(root.handlers), {p: logging.getLogger(p).level for p in PACKAGES}
    yield
    root.handlers = handlers
    for package, level in levels.items():
        logging.getLogger(package).setLevel(level)


def test_tuneloop_records_are_printed_at_the_level_others_are_not(restored_logging, capsys):
    configure_logging("info")
    configure_logging("info")  # again: still one handler
    assert [h.get_name() for h in logging.getLogger().handlers].count(HANDLER_NAME) == 1
    logging.getLogger("tuneloop.gateway").info("gateway up")
    logging.getLogger("serving.engine_process").error("engine failed: no model")
    logging.getLogger("tuneloop.jobs").debug("too detailed")
    logging.getLogger("urllib3.connectionpool").warning("not ours")
    err = capsys.readouterr().err
    assert "INFO tuneloop.gateway: gateway up" in err
    assert "ERROR serving.engine_process: engine failed: no model" in err
    assert "too detailed" not in err and "not ours" not in err
