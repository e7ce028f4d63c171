"""Content-addressed artifact store over fsspec (local directory by default, s3://... by setting).

Keys are sha256 hex digests computed by the store; callers never choose paths, so nothing they
send can escape the root. A directory is stored as one tar of its regular files (sorted,
normalised metadata), so equal content gives an equal key.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec

from services.errors import InvalidInput, NotFound, TuneloopError

_KEY_RE = re.compile(r"[0-9a-f]{64}")
ARTIFACT_REF_PREFIX = "artifact:"
CHUNK_BYTES = 1 << 20


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise InvalidInput(f"artifact key {key!r} is not a sha256 hex digest")
    return key


def artifact_ref(key: str) -> str:
    """How one process names an artifact to another (``artifact:<sha256>``): never a local path,
    so the receiver fetches it from the shared store itself."""
    return ARTIFACT_REF_PREFIX + check_key(key)


def parse_artifact_ref(value: str) -> str | None:
    """The key of an ``artifact:<sha256>`` reference; None for anything else (a local path)."""
    if not value.startswith(ARTIFACT_REF_PREFIX):
        return None
    return check_key(value.removeprefix(ARTIFACT_REF_PREFIX))


class CorruptArtifact(TuneloopError):
    """A stored blob's content does not match its key."""

    status = 500
    code = "artifact_corrupt"


class ArtifactStore:
    """put/get blobs and directories by content hash under one fsspec root."""

    def __init__(self, url: str, cache_dir: Path | None = None) -> None:
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.is_local = self.fs.protocol in ("file", "local") or "file" in self.fs.protocol
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "tuneloop-cache"
        if self.is_local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/blobs/{key[:2]}/{key}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def put_bytes(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        path = self._path(key)
        if not self.fs.exists(path):
            write_whole(self.fs, path, data)
        return key

    def get_bytes(self, key: str) -> bytes:
        """The blob of ``key``, checked against its hash (a corrupt blob is never returned)."""
        return b"".join(self.iter_bytes(key))

    def iter_bytes(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The blob of ``key`` in pieces of at most ``chunk_bytes``, hashed as they are read:
        memory stays one piece whatever the blob's size. NotFound is raised before the first
        piece; :class:`CorruptArtifact` after the last one when the content does not match its
        key, so a consumer must not commit to what it received until the iterator is exhausted
        (a response being streamed is cut short: the client sees an incomplete transfer)."""
        try:
            fh = self.fs.open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {key} is missing from the artifact store") from exc
        digest = hashlib.sha256()
        with fh:
            while chunk := fh.read(chunk_bytes):
                digest.update(chunk)
                yield chunk
        if digest.hexdigest() != key:
            raise CorruptArtifact(
                f"artifact {key} in the store does not match its hash; restore it from a backup "
                "or register the adapter again"
            )

    def open_verified(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The blob of ``key`` in pieces, for a response that must decide its status before its
        first byte: the whole blob is read and hashed once first (NotFound / CorruptArtifact are
        raised here), then streamed (and hashed again), so memory stays one piece."""
        for _ in self.iter_bytes(key, chunk_bytes):
            pass
        return self.iter_bytes(key, chunk_bytes)

    def delete(self, key: str) -> bool:
        """Remove the blob of ``key`` and this process's unpacked copy of it; False when the
        blob was not there. Blobs are shared by content: delete only through
        :func:`services.artifact_gc.collect`, which checks that nothing references the key."""
        path = self._path(key)
        removed = self.fs.exists(path)
        if removed:
            try:
                self.fs.rm(path)
            except FileNotFoundError:  # another process deleted it meanwhile
                removed = False
        shutil.rmtree(self.cache_dir / key, ignore_errors=True)
        return removed

    def put_dir(self, directory: Path) -> str:
        """Store the regular files of ``directory`` (recursively); returns the content key."""
        return self.put_bytes(pack_dir(Path(directory)))

    def materialize_dir(self, key: str, *, into: Path | None = None) -> Path:
        """A local directory ``<into>/<key>`` with the content of ``key`` (``into`` defaults to
        the store's cache dir; cached, hash verified, safe to call repeatedly and concurrently)."""
        cache_dir = Path(into) if into is not None else self.cache_dir
        target = cache_dir / check_key(key)
        if (target / ".complete").exists():
            return target
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir))
        try:
            # Through a local file, hash verified before anything is unpacked: memory stays one
            # piece however large the blob.
            with tempfile.TemporaryFile(dir=cache_dir) as blob:
                for chunk in self.iter_bytes(key):
                    blob.write(chunk)
                blob.seek(0)
                with tarfile.open(fileobj=blob, mode="r") as tar:
                    tar.extractall(tmp, filter="data")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        (tmp / ".complete").touch()
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return target


def write_whole(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``path`` so that readers see nothing or all of it, durably on a local disk."""
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    # A name of its own per writer: two identical writes at once never share a temp file,
    # and the object appears under its name only once complete.
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    local = "file" in fs.protocol or "local" in fs.protocol
    with fs.open(tmp, "wb") as fh:
        fh.write(data)
        if local:
            fh.flush()
            os.fsync(fh.fileno())
    fs.mv(tmp, path)


def pack_dir(directory: Path) -> bytes:
    """Deterministic tar of the regular files under ``directory``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink()):
            rel = path.relative_to(directory).as_posix()
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()
