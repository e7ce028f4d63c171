"""The export archive stream: readable by tar, deterministic, bounded chunks, no short files."""

from __future__ import annotations

import io
import tarfile

import pytest

from services import adapter_export
from services.adapter_export import Member, tar_gz_stream


def _members(files: dict[str, bytes]) -> list[Member]:
    return [Member(name, len(data), io.BytesIO(data)) for name, data in files.items()]


def test_stream_is_a_tar_gz_of_the_files_in_bounded_chunks(monkeypatch):
    monkeypatch.setattr(adapter_export, "CHUNK_BYTES", 4096)
    files = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": bytes(range(256)) * 300}
    chunks = list(tar_gz_stream(_members(files)))
    assert len(chunks) > 1
    archive = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == list(files)
        assert all(m.isfile() and m.mode == 0o644 and m.mtime == 0 for m in members)
        for m in members:
            fh = tar.extractfile(m)
            assert fh is not None and fh.read() == files[m.name]
    assert b"".join(tar_gz_stream(_members(files))) == archive


def test_a_file_shorter_than_its_size_is_an_error():
    with pytest.raises(OSError, match="ended 10 bytes early"):
        list(tar_gz_stream([Member("adapter_model.safetensors", 13, io.BytesIO(b"abc"))]))
