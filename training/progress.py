"""Progress of a training run as a JSON-lines file: one event per line, appended as it happens.

A file works across processes and machines that share it (the driver, Ray Train workers, the
CLI's progress bar, the Jobs API's event stream). Events: ``started``, ``validated``,
``training_started`` (total_steps), ``step`` (step, total_steps, epoch, loss, tokens_per_s,
learning_rate), ``checkpoint`` (step, path, loss), ``resumed`` (step), ``evaluated``, ``saved``, ``succeeded``, ``failed``
(reason). After a worker restart, ``step`` events for re-run steps appear again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def emit(file: str | os.PathLike | None, event: str, /, **fields: Any) -> None:
    """Append one event (no-op without a file). One write per line keeps lines whole."""
    if file is None:
        return
    record = {"time": time.time(), "event": event, **fields}
    line = json.dumps(record, default=str) + "\n"
    Path(file).parent.mkdir(parents=True, exist_ok=True)
    with open(file, "a", encoding="utf-8") as f:
        f.write(line)


def read_events(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete event in the file so far (a half-written last line is skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def follow(
    path: str | os.PathLike, poll_s: float = 0.5, stop_on: tuple[str, ...] = ("succeeded", "failed")
) -> Iterator[dict[str, Any]]:
    """Yield events as they are appended until one of ``stop_on`` (for a CLI progress bar)."""
    seen = 0
    while True:
        events = read_events(path)
        for event in events[seen:]:
            yield event
            if event.get("event") in stop_on:
                return
        seen = len(events)
        time.sleep(poll_s)


def latest_step(path: str | os.PathLike) -> dict[str, Any] | None:
    """The last ``step`` event, or None before the first step."""
    steps = [e for e in read_events(path) if e.get("event") == "step"]
    return steps[-1] if steps else None
