"""Safe unpacking of uploaded .tar.gz archives.

The archive is read as a stream, one member at a time, and stops at the first limit it crosses:
member count, declared or inflated bytes, or compression ratio (a gzip of zeros inflates a
thousand times); nothing is listed or inflated ahead of these checks. Only regular files and
directories are accepted (no symlinks, hard links, devices or FIFOs), with relative paths
without ``..``, no member twice and no member inside a file. Files are written by us from their
data, never by tarfile's extract; when the archive is refused, what was written is removed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from services.errors import InvalidInput, TooLarge

MAX_MEMBERS = 1000
MAX_RATIO = 100
"""Inflated bytes per compressed byte beyond which an archive is refused as a bomb (weights
compress to about 1:1, JSON to about 1:5)."""
RATIO_FLOOR = 8 * 1024 * 1024
"""Inflated bytes below which the ratio is not checked (small, highly compressible archives)."""
_HEADER_ALLOWANCE = 4096  # tar stream bytes per member on top of its data: headers, padding


class _Inflated:
    """The decompressed stream of ``raw``, refusing to inflate past ``limit`` bytes or
    ``MAX_RATIO`` times what it read of ``raw`` (checked as it reads, so a bomb costs at most
    ``limit`` bytes of work, whatever its members or headers declare)."""

    def __init__(self, raw: BinaryIO, limit: int, max_bytes: int) -> None:
        self.raw = raw
        self.limit = limit
        self.max_bytes = max_bytes
        self.inflated = 0
        magic = raw.read(6)
        raw.seek(0)
        self.stream: BinaryIO | io.BufferedIOBase
        if magic.startswith(b"\x1f\x8b"):
            self.stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif magic.startswith(b"BZh"):
            self.stream = bz2.BZ2File(raw)
        elif magic.startswith(b"\xfd7zXZ"):
            self.stream = lzma.LZMAFile(raw)
        else:
            self.stream = raw  # an uncompressed tar (tarfile says so if it is not one)

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.stream.read(size if size >= 0 else 1 << 20)
        except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
            raise InvalidInput(f"archive is corrupt or truncated: {exc}") from exc
        self.inflated += len(data)
        if self.inflated > self.limit:
            raise TooLarge(
                f"archive inflates to more than {self.max_bytes} bytes of files; the limit is "
                f"{self.max_bytes} (TUNELOOP_MAX_ADAPTER_BYTES)"
            )
        packed = max(self.raw.tell(), 1)
        if self.inflated > RATIO_FLOOR and self.inflated > MAX_RATIO * packed:
            raise TooLarge(
                f"archive inflates more than {MAX_RATIO} times its size ({packed} bytes read "
                f"became {self.inflated}); refused as a compression bomb, upload real weights"
            )
        return data


def safe_extract(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack ``archive`` into ``dest``; returns ``dest``. Raises InvalidInput or TooLarge, and
    then leaves nothing of the archive in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    created: list[Path] = []
    try:
        with archive.open("rb") as raw:
            limit = max_bytes + (MAX_MEMBERS + 2) * _HEADER_ALLOWANCE
            _extract_stream(_Inflated(raw, limit, max_bytes), dest, max_bytes, created)
    except BaseException:
        for path in reversed(created):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise
    return dest


def _extract_stream(stream: _Inflated, dest: Path, max_bytes: int, created: list[Path]) -> None:
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
    except tarfile.TarError as exc:
        raise InvalidInput(f"upload is not a readable .tar.gz archive: {exc}") from exc
    seen: dict[tuple[str, ...], bool] = {}  # member path -> is a directory
    total = 0
    count = 0
    with tar:
        try:
            for member in tar:
                count += 1
                if count > MAX_MEMBERS:
                    raise InvalidInput(
                        f"archive has more than {MAX_MEMBERS} entries; pack only the adapter files"
                    )
                parts = _check_member(member, seen)
                if member.isfile():
                    total += member.size
                    if total > max_bytes:
                        raise TooLarge(
                            f"archive unpacks to more than {max_bytes} bytes (at {member.name!r}); "
                            f"the limit is {max_bytes} (TUNELOOP_MAX_ADAPTER_BYTES)"
                        )
                _write_member(tar, member, parts, dest, created)
        except tarfile.TarError as exc:
            raise InvalidInput(f"archive is corrupt: {exc}") from exc


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...],
                  dest: Path, created: list[Path]) -> None:
    if not parts:
        return  # the archive root itself ("./" from ``tar -C dir -czf a.tar.gz .``)
    target = dest.joinpath(*parts)
    for i in range(1, len(parts) + (1 if member.isdir() else 0)):
        folder = dest.joinpath(*parts[:i])
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    if member.isdir():
        return
    source = tar.extractfile(member)
    if source is None:
        raise InvalidInput(f"archive member {member.name!r} has no data")
    created.append(target)
    with source, target.open("wb") as out:
        try:
            while chunk := source.read(1 << 20):
                out.write(chunk)
        except (tarfile.TarError, EOFError) as exc:
            raise InvalidInput(f"archive is truncated at {member.name!r}: {exc}") from exc


def _check_member(member: tarfile.TarInfo, seen: dict[tuple[str, ...], bool]) -> tuple[str, ...]:
    """The member's path parts (empty for the archive root); raises InvalidInput when unsafe."""
    name = member.name
    path = PurePosixPath(name)
    if member.issym() or member.islnk():
        raise InvalidInput(f"archive member {name!r} is a link; links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise InvalidInput(
            f"archive member {name!r} is a device, FIFO or special file; only files are allowed"
        )
    if path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise InvalidInput(f"archive member {name!r} has an absolute path; use relative paths")
    if ".." in path.parts or "\\" in name:
        raise InvalidInput(f"archive member {name!r} escapes the archive root ('..')")
    parts = path.parts
    if not parts and member.isfile():
        raise InvalidInput(f"archive member {name!r} is a file without a name")
    for i in range(1, len(parts)):
        if seen.get(parts[:i]) is False:
            raise InvalidInput(
                f"archive member {name!r} lies inside {'/'.join(parts[:i])!r}, which the archive "
                "has as a file; pack each path once"
            )
    if parts in seen and not (seen[parts] and member.isdir()):
        raise InvalidInput(f"archive member {name!r} appears twice (or as file and folder); "
                           "pack each path once")
    for i in range(1, len(parts)):
        seen[parts[:i]] = True  # folders made implicitly for this member
    seen[parts] = member.isdir()
    return parts


def find_adapter_root(directory: Path) -> Path:
    """The folder holding adapter_config.json: ``directory`` itself or its single subfolder."""
    if (directory / "adapter_config.json").is_file():
        return directory
    children = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return find_adapter_root(children[0])
    return directory
