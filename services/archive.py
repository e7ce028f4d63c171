"""Safe unpacking of uploaded .tar.gz archives.

Every member is checked before anything is written: regular files and directories only (no
symlinks, hard links, devices or FIFOs), relative paths without ``..``, a bounded member count
and total size. Files are written by us from their data, never by tarfile's extract.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

from services.errors import InvalidInput, TooLarge

MAX_MEMBERS = 1000


def safe_extract(archive: Path, dest: Path, *, max_bytes: int) -> Path:
    """Unpack ``archive`` into ``dest``; returns ``dest``. Raises InvalidInput or TooLarge."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidInput(f"upload is not a readable .tar.gz archive: {exc}") from exc
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InvalidInput(f"archive is corrupt: {exc}") from exc
        if len(members) > MAX_MEMBERS:
            raise InvalidInput(f"archive has {len(members)} entries; at most {MAX_MEMBERS} allowed")
        total = 0
        for member in members:
            _check_member(member)
            total += member.size if member.isfile() else 0
        if total > max_bytes:
            raise TooLarge(
                f"archive unpacks to {total} bytes; the limit is {max_bytes} "
                "(TUNELOOP_MAX_ADAPTER_BYTES)"
            )
        for member in members:
            target = dest.joinpath(*PurePosixPath(member.name).parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise InvalidInput(f"archive member {member.name!r} has no data")
            with source, target.open("wb") as out:
                try:
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
                except (tarfile.TarError, OSError, EOFError) as exc:
                    raise InvalidInput(f"archive is truncated at {member.name!r}: {exc}") from exc
    return dest


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if member.issym() or member.islnk():
        raise InvalidInput(f"archive member {name!r} is a link; links are not allowed")
    if not (member.isfile() or member.isdir()):
        raise InvalidInput(
            f"archive member {name!r} is a device, FIFO or special file; only files are allowed"
        )
    if not path.parts or path.is_absolute() or name.startswith(("/", "\\")) or ":" in path.parts[0]:
        raise InvalidInput(f"archive member {name!r} has an absolute path; use relative paths")
    if ".." in path.parts or "\\" in name:
        raise InvalidInput(f"archive member {name!r} escapes the archive root ('..')")


def find_adapter_root(directory: Path) -> Path:
    """The folder holding adapter_config.json: ``directory`` itself or its single subfolder."""
    if (directory / "adapter_config.json").is_file():
        return directory
    children = [p for p in directory.iterdir() if not p.name.startswith(".")]
    if len(children) == 1 and children[0].is_dir():
        return find_adapter_root(children[0])
    return directory
