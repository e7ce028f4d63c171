"""Session-wide fixtures shared by every test package.

The default base model is imported once into the repository's ``.tuneloop/models`` (the same
place ``make run`` uses), so tests never convert it twice.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.api import ADMIN_HEADERS, tenant_key

# Shared fixtures live in tests/support; ADMIN_HEADERS and tenant_key stay importable from here.
pytest_plugins = ["tests.support.adapters", "tests.support.engine"]
__all__ = ["ADMIN_HEADERS", "tenant_key"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # Training jobs default to every CPU of the Ray cluster (torch threads = CPUs). On the small,
    # shared CI machines two spinning OpenMP threads next to a vLLM engine measured 2.6-6x slower
    # than one (docs/benchmarks.md), so the suite trains on one; tests/training/test_recipe.py
    # proves that a worker given N CPUs runs N torch threads.
    os.environ.setdefault("TUNELOOP_TRAIN_CPUS_PER_WORKER", "1")


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The default base model as a Hugging Face directory (imported on first use)."""
    from services.base_model import import_default_model

    target = REPO_ROOT / ".tuneloop" / "models" / "SmolLM2-135M-Instruct"
    path, _ = import_default_model(target)
    return path


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL is not installed; run `bash scripts/system-deps.sh` "
            "(apt-get install postgresql) — make test does it"
        )
    return found[-1].parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the test session: ``TUNELOOP_TEST_POSTGRES_URL`` if set,
    else a throwaway cluster started from the Debian packages. Yields a base URL (no db name)."""
    import os
    import subprocess

    given = os.environ.get("TUNELOOP_TEST_POSTGRES_URL")
    if given:
        yield given.rstrip("/")
        return
    bindir = _pg_bin()
    import shutil
    import tempfile

    # Not under pytest's tmp dir: that one is private to root and initdb runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        os.chmod(root, 0o777)
        os.chmod(sock, 0o777)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tuneloop", "--no-sync"],
        check=True, capture_output=True,
    )
    port = _free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"],
        check=True, capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://tuneloop@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the session's PostgreSQL server."""
    import uuid

    from sqlalchemy import create_engine, text

    name = "t_" + uuid.uuid4().hex[:12]
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    yield f"{postgres_server}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Runs a test on both stores: SQLite (the embedded default) and PostgreSQL (marked
    ``postgres``, so ``-m "not postgres"`` runs without a server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tuneloop.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def make_settings(tmp_path, base_model_dir):
    """Settings on a temporary data dir with the shared base model; keyword overrides."""
    from services.settings import Settings

    def _make(**overrides):
        values = {"data_dir": tmp_path / "data", "base_model": str(base_model_dir),
                  "admin_key": "admin-test-key", "base_model_name": "base"}
        values.update(overrides)
        return Settings(**values)

    return _make


@pytest.fixture
def platform(make_settings):
    """A platform on the default SQLite store of a temporary data dir, admin key ``admin-test-key``."""
    from services.platform import Platform

    p = Platform.open(make_settings())
    yield p
    p.close()


@pytest.fixture
def api_platform(make_settings, database_url):
    """A platform on a fresh database (SQLite and PostgreSQL), admin key ``admin-test-key``."""
    from services.platform import Platform

    p = Platform.open(make_settings(database_url=database_url))
    yield p
    p.close()


@pytest.fixture
def api_client(api_platform):
    """A TestClient of the platform API (no serving) on ``api_platform``."""
    from fastapi.testclient import TestClient

    from tuneloop.app import create_app

    with TestClient(create_app(platform=api_platform)) as c:
        yield c
