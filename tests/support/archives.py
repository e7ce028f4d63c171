"""Tar archives built in memory, for adapter upload tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def tar_gz(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """Build a .tar.gz from (name, data, kind) with kind in file|symlink|hardlink|fifo|dir."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "dir": tarfile.DIRTYPE,
                         "chardev": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = (data or b"/etc/passwd").decode()
            tar.addfile(info)
    return buf.getvalue()


def tar_dir(directory: Path, prefix: str = "adapter") -> bytes:
    entries = [(f"{prefix}/{p.name}", p.read_bytes(), "file") for p in sorted(directory.iterdir()) if p.is_file()]
    return tar_gz(entries)
