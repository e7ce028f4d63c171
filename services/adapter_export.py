"""Exporting an adapter version: its PEFT directory as a .tar.gz, written while it is sent.

The archive holds exactly the files registration keeps (:data:`ADAPTER_FILES`, at its root), so
registering it again, here or on another tuneloop with the same base model, stores the same
content key and the engine serves the same replies.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from services import registry
from services.adapter_validation import ADAPTER_FILES
from services.platform import Platform
from services.store.models import Tenant

CHUNK_BYTES = 1 << 20
"""File bytes read (and at most about that many compressed bytes held) per step of the stream."""


@dataclass
class Member:
    """One file of the archive, already open (a delete meanwhile cannot cut the export short)."""

    name: str
    size: int
    fh: BinaryIO


@dataclass
class AdapterExport:
    filename: str
    members: list[Member]

    def chunks(self) -> Iterator[bytes]:
        """The .tar.gz, in pieces; closes the files when done or abandoned."""
        try:
            yield from tar_gz_stream(self.members)
        finally:
            self.close()

    def close(self) -> None:
        for member in self.members:
            member.fh.close()


def open_export(platform: Platform, tenant: Tenant, name: str, version: int) -> AdapterExport:
    """The export of ``name@v<version>`` of ``tenant``. Raises NotFound for a missing adapter
    or version (another tenant's too), NotFound / CorruptArtifact when its blob is gone or bad."""
    with platform.store.read() as session:
        key = registry.get_version(session, tenant, name, version).artifact_key
    directory = platform.artifacts.materialize_dir(key)
    members: list[Member] = []
    try:
        for filename in ADAPTER_FILES:
            fh = (directory / filename).open("rb")
            members.append(Member(filename, os.fstat(fh.fileno()).st_size, fh))
    except BaseException:
        AdapterExport("", members).close()
        raise
    return AdapterExport(f"{name}-v{version}.tar.gz", members)


def tar_gz_stream(members: list[Member]) -> Iterator[bytes]:
    """A gzipped POSIX tar of ``members`` (mode 0644, mtime 0: same files, same archive),
    yielded as it is compressed: memory stays about :data:`CHUNK_BYTES` whatever the sizes."""
    sink = io.BytesIO()
    gz = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=6, mtime=0)

    def drain() -> bytes:
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    offset = 0  # tar bytes so far
    with gz:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.size, info.mode, info.mtime = member.size, 0o644, 0
            header = info.tobuf(tarfile.PAX_FORMAT)
            gz.write(header)
            left = member.size
            while left:
                data = member.fh.read(min(CHUNK_BYTES, left))
                if not data:
                    raise OSError(f"{member.name} ended {left} bytes early while being exported")
                left -= len(data)
                gz.write(data)
                if out := drain():
                    yield out
            padding = -member.size % tarfile.BLOCKSIZE
            gz.write(tarfile.NUL * padding)
            offset += len(header) + member.size + padding
        # the end: two empty blocks, then zeros up to a whole record, as tar writes it
        offset += 2 * tarfile.BLOCKSIZE
        gz.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + -offset % tarfile.RECORDSIZE))
    if out := drain():
        yield out
