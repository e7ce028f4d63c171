"""Two API processes over one store agree: a change made through one is in force on the other
within the serving sync interval, not after a cache TTL (services/cache_sync.py)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from services.store.changes import read_counter
from services.store.models import AdminKey
from tests.support.api import ADMIN_HEADERS
from tuneloop.app import create_app


def until(predicate, timeout_s: float) -> float:
    """Seconds until ``predicate()`` holds; fails after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_key_revoked_through_one_process_is_refused_by_another_within_the_sync_interval(
    make_settings, database_url
):
    settings = make_settings(database_url=database_url, serving_sync_interval_s=0.2)
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        assert one.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN_HEADERS).status_code == 201
        key = one.post("/admin/tenants/acme/keys", headers=ADMIN_HEADERS).json()
        auth = {"Authorization": f"Bearer {key['key']}"}
        assert two.get("/v1/files", headers=auth).status_code == 200  # now in two's key cache
        assert one.delete(f"/admin/tenants/acme/keys/{key['id']}", headers=ADMIN_HEADERS).status_code == 200
        # The key cache's TTL (5 s) would keep the key valid on `two` without the watcher.
        waited = until(lambda: two.get("/v1/files", headers=auth).status_code == 401, timeout_s=2.0)
    assert waited < 2.0


def test_the_counter_moves_with_serving_changes_only(platform, peft_adapter):
    from services.adapter_intake import register_adapter_dir
    from services.tenants import create_tenant

    def counter() -> int:
        with platform.store.read() as session:
            return read_counter(session)

    start = counter()
    with platform.store.write() as session:
        create_tenant(session, "acme")
    after_tenant = counter()
    register_adapter_dir(platform, "acme", "support", peft_adapter)
    after_version = counter()
    with platform.store.write() as session:
        session.add(AdminKey(key_hash="0" * 64))  # not something serving caches
    assert start < after_tenant < after_version
    assert counter() == after_version  # a transaction without serving changes leaves it alone


@pytest.mark.parametrize("processes", [3])
def test_processes_starting_at_once_take_turns_migrating(database_url, processes):
    import subprocess
    import sys

    code = "import sys; from services.store.db import upgrade; upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, database_url],
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * processes, errors
