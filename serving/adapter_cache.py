"""An engine host's local copies of adapter versions, fetched from the artifact store.

The gateway names an adapter to an engine by its content key (``artifact:<sha256>``), never by a
path, so an engine on any host can serve any version: :class:`AdapterCache` fetches the blob,
checks it against its hash (:meth:`services.artifacts.ArtifactStore.get_bytes`), unpacks it
once under ``root/<key>`` and keeps at most ``max_entries`` versions, deleting the least
recently used beyond that. Safe for concurrent callers in one process (one fetch per key) and
across processes (unpacking goes to a temporary directory renamed into place).
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from services.artifacts import ArtifactStore, check_key
from services.errors import InvalidInput


class AdapterCache:
    """Bounded, hash-verified local directories of artifact keys."""

    def __init__(self, store: ArtifactStore, root: Path, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries ({max_entries}) must be >= 1")
        self.store = store
        self.root = Path(root)
        self.max_entries = max_entries
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def directory(self, key: str) -> Path:
        """The unpacked directory of ``key``, fetched now if it is not cached (blocking I/O)."""
        check_key(key)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            target = self.root / key
            if not (target / ".complete").exists():
                self.store.materialize_dir(key, into=self.root)
            os.utime(target)  # most recently used
        self._trim(keep=key)
        return target

    def cached(self) -> list[str]:
        """Cached keys, least recently used first."""
        if not self.root.is_dir():
            return []
        entries = [p for p in self.root.iterdir()
                   if _is_key(p.name) and (p / ".complete").exists()]  # not temporary dirs
        return [p.name for p in sorted(entries, key=lambda p: p.stat().st_mtime)]

    def _trim(self, *, keep: str) -> None:
        cached = self.cached()
        for key in cached[: max(0, len(cached) - self.max_entries)]:
            if key != keep:
                shutil.rmtree(self.root / key, ignore_errors=True)


def _is_key(name: str) -> bool:
    try:
        check_key(name)
    except InvalidInput:
        return False
    return True
