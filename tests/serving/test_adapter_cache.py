"""AdapterCache: fetched once, hash verified, bounded by entries (least recently used go)."""

from __future__ import annotations

import os
import threading

import pytest

from services.artifacts import ArtifactStore, CorruptArtifact
from serving.adapter_cache import AdapterCache


def stored_dirs(store: ArtifactStore, tmp_path, n: int) -> list[str]:
    keys = []
    for i in range(n):
        d = tmp_path / f"src{i}"
        d.mkdir()
        (d / "adapter_config.json").write_text(f'{{"r": {i + 1}}}')
        keys.append(store.put_dir(d))
    return keys


def test_directories_are_unpacked_once_and_the_least_recently_used_are_deleted(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    keys = stored_dirs(store, tmp_path, 4)
    cache = AdapterCache(store, tmp_path / "cache", max_entries=2)
    first = cache.directory(keys[0])
    assert (first / "adapter_config.json").read_text() == '{"r": 1}'
    os.utime(first, (1, 1))  # make the ordering independent of the clock's resolution
    cache.directory(keys[1])
    cache.directory(keys[0])  # used again: now the most recent
    os.utime(cache.root / keys[1], (2, 2))
    cache.directory(keys[2])
    assert sorted(cache.cached()) == sorted([keys[0], keys[2]])
    assert not (cache.root / keys[1]).exists()


def test_concurrent_callers_share_one_fetch(tmp_path, monkeypatch):
    store = ArtifactStore(str(tmp_path / "store"))
    (key,) = stored_dirs(store, tmp_path, 1)
    fetches = []
    real = store.iter_bytes  # what a fetch reads the blob with

    def counted(k, *args):
        fetches.append(k)
        return real(k, *args)

    monkeypatch.setattr(store, "iter_bytes", counted)
    cache = AdapterCache(store, tmp_path / "cache", max_entries=4)
    threads = [threading.Thread(target=cache.directory, args=(key,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fetches == [key]


def test_a_blob_that_does_not_match_its_key_is_never_unpacked(tmp_path):
    store = ArtifactStore(str(tmp_path / "store"))
    (key,) = stored_dirs(store, tmp_path, 1)
    with open(store._path(key), "ab") as fh:
        fh.write(b"tampered")
    cache = AdapterCache(store, tmp_path / "cache", max_entries=4)
    with pytest.raises(CorruptArtifact):
        cache.directory(key)
    assert cache.cached() == []
