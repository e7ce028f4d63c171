"""Archive unpacking streams members and stops at the first limit: bombs are refused quickly,
without inflating them; ``tar -C dir -czf a.tar.gz .`` archives and colliding members."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
import time
import tracemalloc

import pytest

from services import archive as archive_module
from services.archive import MAX_MEMBERS, find_adapter_root, safe_extract
from services.errors import InvalidInput, TooLarge
from tests.support.archives import tar_gz


def test_an_archive_of_the_folder_itself_is_accepted(lora_factory, tmp_path):
    if shutil.which("tar") is None:
        pytest.skip("needs the tar command")
    archive = tmp_path / "a.tar.gz"
    subprocess.run(["tar", "-C", str(lora_factory(8)), "-czf", str(archive), "."], check=True)
    with tarfile.open(archive) as tar:
        assert "." in tar.getnames() or "./" in tar.getnames()  # the case being tested
    root = find_adapter_root(safe_extract(archive, tmp_path / "out", max_bytes=10**8))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in root.iterdir()}


def test_the_root_entry_dot_slash_is_accepted_in_a_generated_archive(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz([("./", None, "dir"), ("./x.txt", b"x", "file")]))
    assert (safe_extract(archive, tmp_path / "out", max_bytes=10) / "x.txt").read_bytes() == b"x"


@pytest.mark.parametrize("entries", [
    [("a", b"file", "file"), ("a/b", b"child", "file")],
    [("a/b", b"child", "file"), ("a", b"file", "file")],
    [("a", b"file", "file"), ("a", None, "dir")],
    [("a", b"one", "file"), ("./a", b"two", "file")],
])
def test_colliding_members_are_refused_and_nothing_is_left(tmp_path, entries):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(tar_gz(entries))
    dest = tmp_path / "out"
    with pytest.raises(InvalidInput, match="pack each path once"):
        safe_extract(archive, dest, max_bytes=10**6)
    assert list(dest.iterdir()) == []


def _empty_header_bomb(members: int) -> bytes:
    """``members`` empty files: only headers, which the old code listed before any limit."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(members):
            tar.addfile(tarfile.TarInfo(f"f{i}"), io.BytesIO(b""))
    return buf.getvalue()


def test_an_empty_header_bomb_is_refused_at_the_member_limit_within_a_second(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(_empty_header_bomb(5 * MAX_MEMBERS))
    reads = []
    real = tarfile.TarFile.next

    def counting_next(self):
        reads.append(1)
        return real(self)

    start = time.perf_counter()
    with pytest.raises(InvalidInput, match=f"more than {MAX_MEMBERS} entries"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tarfile.TarFile, "next", counting_next)
            safe_extract(archive, tmp_path / "out", max_bytes=10**9)
    assert time.perf_counter() - start < 1.0
    assert len(reads) <= MAX_MEMBERS + 2, "headers past the limit were read"  # +1: open()


def _zeros_gzip(member_size: int) -> bytes:
    """A .tar.gz of one member of ``member_size`` zero bytes (a multiple of 64 MiB, or below),
    built fast from repeated gzip members (a gzip stream may hold several)."""
    info = tarfile.TarInfo("adapter_model.safetensors")
    info.size = member_size
    chunk = 64 << 20
    zeros = gzip.compress(b"\0" * min(chunk, member_size), compresslevel=1)
    repeats = max(member_size // chunk, 1)
    return b"".join([gzip.compress(info.tobuf()), zeros * repeats, gzip.compress(b"\0" * 1024)])


def test_a_gzip_inflating_to_gibibytes_is_refused_without_inflating_it(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(_zeros_gzip(2 << 30))  # 2 GiB of zeros in ~2 MB
    inflated = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        data = real_read(self, size)
        inflated.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(TooLarge, match="compression bomb"):
        safe_extract(archive, tmp_path / "out", max_bytes=4 << 30)  # the byte limit alone: too late
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
    assert sum(inflated) <= archive_module.RATIO_FLOOR + (2 << 20)
    assert peak < 64 << 20
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_declared_sizes_stop_the_stream_before_the_data(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_zeros_gzip(5 << 20))
    with pytest.raises(TooLarge, match="TUNELOOP_MAX_ADAPTER_BYTES"):
        safe_extract(archive, tmp_path / "out", max_bytes=1 << 20)
