"""Content-addressed artifact store over fsspec (local directory by default, s3://... by setting).

Keys are sha256 hex digests computed by the store; callers never choose paths, so nothing they
send can escape the root. A directory is stored as one tar of its regular files (sorted,
normalised metadata), so equal content gives an equal key.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import fsspec

from services.errors import InvalidInput, NotFound

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


def check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InvalidInput(f"artifact key {key!r} is not a sha256 hex digest")
    return key


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
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.tmp-{hashlib.sha256(path.encode()).hexdigest()[:8]}"
            with self.fs.open(tmp, "wb") as fh:
                fh.write(data)
            self.fs.mv(tmp, path)
        return key

    def get_bytes(self, key: str) -> bytes:
        try:
            with self.fs.open(self._path(key), "rb") as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {key} is missing from the artifact store") from exc

    def put_dir(self, directory: Path) -> str:
        """Store the regular files of ``directory`` (recursively); returns the content key."""
        return self.put_bytes(pack_dir(Path(directory)))

    def materialize_dir(self, key: str) -> Path:
        """A local directory with the content of ``key`` (cached; safe to call repeatedly)."""
        target = self.cache_dir / key
        if (target / ".complete").exists():
            return target
        data = self.get_bytes(key)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=self.cache_dir))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(tmp, filter="data")
        (tmp / ".complete").touch()
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
        return target


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
