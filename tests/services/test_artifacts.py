"""The artifact store is content-addressed and never lets a caller's path escape its root."""

from __future__ import annotations

import hashlib

import pytest

from services.artifacts import ArtifactStore, CorruptArtifact
from services.errors import InvalidInput, NotFound


def test_blobs_are_content_addressed(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    key = store.put_bytes(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert store.put_bytes(b"hello") == key
    assert store.get_bytes(key) == b"hello"
    assert all(p.is_relative_to(tmp_path / "root") for p in (tmp_path / "root").rglob("*"))


def test_directories_round_trip_with_stable_keys(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("A")
    (src / "sub" / "b.txt").write_text("B")
    store = ArtifactStore(f"file://{tmp_path / 'root'}", cache_dir=tmp_path / "cache")
    key = store.put_dir(src)
    (src / "a.txt").touch()  # mtime changes do not change the key
    assert store.put_dir(src) == key
    out = store.materialize_dir(key)
    assert (out / "sub" / "b.txt").read_text() == "B"
    assert store.materialize_dir(key) == out


@pytest.mark.parametrize("bad", ["../../etc/passwd", "/etc/passwd", "ab" * 10, "A" * 64, ""])
def test_keys_that_are_not_digests_are_refused(tmp_path, bad):
    store = ArtifactStore(str(tmp_path / "root"))
    with pytest.raises(InvalidInput):
        store.get_bytes(bad)


def test_missing_blob_is_not_found(tmp_path):
    with pytest.raises(NotFound):
        ArtifactStore(str(tmp_path)).get_bytes("0" * 64)


def test_memory_filesystem_works_like_s3(tmp_path):
    store = ArtifactStore("memory://tuneloop-test")
    key = store.put_bytes(b"remote")
    assert store.get_bytes(key) == b"remote"


def test_delete_removes_the_blob_and_the_unpacked_copy(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("A")
    store = ArtifactStore(str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    key = store.put_dir(src)
    store.materialize_dir(key)
    assert store.delete(key) is True
    assert not store.exists(key) and not (tmp_path / "cache" / key).exists()
    assert not list((tmp_path / "root").rglob(key))
    assert store.delete(key) is False
    with pytest.raises(NotFound):
        store.get_bytes(key)


def _corrupt(store: ArtifactStore, key: str, data: bytes) -> None:
    with store.fs.open(store._path(key), "wb") as fh:
        fh.write(data)


def test_blobs_are_read_in_pieces_and_checked_after_the_last(tmp_path):
    store = ArtifactStore(str(tmp_path / "root"))
    data = bytes(range(256)) * 1000
    key = store.put_bytes(data)
    pieces = list(store.iter_bytes(key, chunk_bytes=10_000))
    assert len(pieces) == 26 and max(map(len, pieces)) == 10_000
    assert b"".join(pieces) == data
    _corrupt(store, key, data[:-1] + b"x")
    received = []
    with pytest.raises(CorruptArtifact, match="does not match its hash"):
        for piece in store.iter_bytes(key, chunk_bytes=10_000):
            received.append(piece)
    assert len(received) == 26  # the whole content went by before the mismatch was known
    with pytest.raises(CorruptArtifact):
        store.get_bytes(key)


def test_a_verified_stream_fails_before_its_first_piece(tmp_path):
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(NotFound):
        store.open_verified("0" * 64)  # raised by the call: a response can still answer 404
    key = store.put_bytes(b"x" * 5000)
    assert b"".join(store.open_verified(key, chunk_bytes=1000)) == b"x" * 5000
    _corrupt(store, key, b"y" * 5000)
    with pytest.raises(CorruptArtifact):
        store.open_verified(key)


def test_a_corrupt_directory_blob_is_never_unpacked(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("A")
    store = ArtifactStore(str(tmp_path / "root"), cache_dir=tmp_path / "cache")
    key = store.put_dir(src)
    _corrupt(store, key, (tmp_path / "root").joinpath("x").as_posix().encode())
    with pytest.raises(CorruptArtifact):
        store.materialize_dir(key)
    assert list((tmp_path / "cache").iterdir()) == []  # no partial or temporary copy left
