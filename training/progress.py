"""Progress of a training run as JSON-lines events, one per line, written as they happen.

A run's progress target is either a local file (``tuneloop train``, benchmarks: every process
appends to it) or an fsspec URL of a directory (a fine-tuning job's workspace in the artifact
store, e.g. ``s3://bucket/tuneloop/jobs/<id>/progress``). Object stores cannot append, so under a
URL every writing process (the run's driver, Ray Train's rank-0 worker on whatever machine it
runs) keeps one object of its own and rewrites it whole; readers merge the objects by time.
Every event but ``step`` is written at once; ``step`` events at most every ``FLUSH_S`` seconds
(and always before the process exits normally).

Events: ``started``, ``validated``, ``training_started`` (total_steps), ``step`` (step,
total_steps, epoch, loss, tokens_per_s, learning_rate), ``checkpoint`` (step, path, loss),
``resumed`` (step), ``evaluated``, ``saved``, ``succeeded``, ``failed`` (reason). After a worker
restart, ``step`` events for re-run steps appear again.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLUSH_S = 1.0
THROTTLED = frozenset({"step"})


def is_url(target: str | os.PathLike) -> bool:
    return "://" in str(target)


def emit(target: str | os.PathLike | None, event: str, /, **fields: Any) -> None:
    """Record one event (no-op without a target)."""
    if target is None:
        return
    record = {"time": time.time(), "event": event, **fields}
    line = json.dumps(record, default=str) + "\n"
    if is_url(target):
        _object_log(str(target)).append(line, urgent=event not in THROTTLED)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as f:  # one write per line keeps lines whole
        f.write(line)


def flush() -> None:
    """Write every event this process has recorded under a URL (called at exit too)."""
    for log in list(_LOGS.values()):
        log.flush()


class _ObjectLog:
    """This process's events under one progress URL: an object of its own, rewritten whole."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        name = f"{time.time_ns():020d}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = f"{self.root}/{name}.jsonl"
        self.lines: list[str] = []
        self.written = 0
        self.last_flush = 0.0
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()

    def append(self, line: str, *, urgent: bool) -> None:
        with self.lock:
            self.lines.append(line)
            if urgent or time.monotonic() - self.last_flush >= FLUSH_S:
                self._flush_locked()
            elif self.timer is None:
                self.timer = threading.Timer(FLUSH_S, self.flush)
                self.timer.daemon = True
                self.timer.start()

    def flush(self) -> None:
        with self.lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.written == len(self.lines):
            return
        self.fs.makedirs(self.root, exist_ok=True)
        self.fs.pipe_file(self.path, "".join(self.lines).encode())
        self.written, self.last_flush = len(self.lines), time.monotonic()


_LOGS: dict[tuple[int, str], _ObjectLog] = {}
_LOGS_LOCK = threading.Lock()


def _object_log(url: str) -> _ObjectLog:
    key = (os.getpid(), url.rstrip("/"))
    with _LOGS_LOCK:
        if key not in _LOGS:
            if not _LOGS:
                atexit.register(flush)
            _LOGS[key] = _ObjectLog(url)
        return _LOGS[key]


def _parse(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a half-written last line (local appends)
            continue
    return events


class ProgressReader:
    """Reads a progress target incrementally: :meth:`poll` returns the events recorded since
    the last poll, in time order (under a URL, only objects whose size changed are read)."""

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = str(target)
        self._seen: dict[str, int] = {}
        self._sizes: dict[str, int] = {}

    def _streams(self) -> dict[str, list[dict[str, Any]]]:
        if not is_url(self.target):
            try:
                return {"": _parse(Path(self.target).read_text(encoding="utf-8"))}
            except FileNotFoundError:
                return {}
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.target)
        fs.invalidate_cache(root)  # listings are cached per filesystem instance (s3fs)
        try:
            entries = fs.ls(root, detail=True)
        except FileNotFoundError:
            return {}
        streams = {}
        for entry in entries:
            name, size = entry["name"], int(entry.get("size") or 0)
            if entry.get("type") != "file" or not name.endswith(".jsonl"):
                continue
            if self._sizes.get(name) == size:
                continue
            try:
                streams[name] = _parse(fs.cat_file(name).decode("utf-8"))
            except FileNotFoundError:
                continue
            self._sizes[name] = size
        return streams

    def poll(self) -> list[dict[str, Any]]:
        new: list[dict[str, Any]] = []
        for name, events in self._streams().items():
            new += events[self._seen.get(name, 0):]
            self._seen[name] = max(len(events), self._seen.get(name, 0))
        return sorted(new, key=lambda e: float(e.get("time") or 0))


def read_events(target: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete event recorded so far, in time order."""
    return ProgressReader(target).poll()


def follow(
    target: str | os.PathLike, poll_s: float = 0.5,
    stop_on: tuple[str, ...] = ("succeeded", "failed"),
) -> Iterator[dict[str, Any]]:
    """Yield events as they are recorded until one of ``stop_on`` (for a CLI progress bar)."""
    reader = ProgressReader(target)
    while True:
        for event in reader.poll():
            yield event
            if event.get("event") in stop_on:
                return
        time.sleep(poll_s)


def latest_step(target: str | os.PathLike) -> dict[str, Any] | None:
    """The last ``step`` event, or None before the first step."""
    steps = [e for e in read_events(target) if e.get("event") == "step"]
    return steps[-1] if steps else None
