"""Artifact garbage collection on SQLite and PostgreSQL: a blob goes only when no row
references it, and a writer that adds a reference restores a blob collected meanwhile."""

from __future__ import annotations

import threading

from services.artifact_gc import collect, is_referenced, keep_stored, lock_key
from services.store.models import Adapter, DatasetFile, RetrainRun, Tenant


def _file(session, tenant_id: int, key: str, file_id: str) -> None:
    session.add(DatasetFile(id=file_id, tenant_id=tenant_id, filename="d.jsonl",
                            purpose="fine-tune", bytes=1, sha256=key, status="processed",
                            task="chat", format="jsonl"))


def test_collect_deletes_only_unreferenced_blobs(api_platform):
    p = api_platform
    kept, lineage, loose = (p.artifacts.put_bytes(b"kept"), p.artifacts.put_bytes(b"lineage"),
                            p.artifacts.put_bytes(b"loose"))
    with p.store.write() as s:
        tenant = Tenant(name="acme")
        s.add(tenant)
        s.flush()
        _file(s, tenant.id, kept, "file-1")
        adapter = Adapter(tenant_id=tenant.id, name="bot", task="chat")
        s.add(adapter)
        s.flush()
        # a lineage key is referenced from a retrain run's JSON
        s.add(RetrainRun(id="rtrun-1", adapter_id=adapter.id, tenant_id=tenant.id,
                         status="failed", trigger="drift", champion_version=1,
                         dataset_version="d", dataset={"lineage_key": lineage},
                         training_file="file-1", validation_file="file-1"))
    with p.store.read() as s:
        assert is_referenced(s, kept) and is_referenced(s, lineage)
        assert not is_referenced(s, loose)
    assert collect(p.store, p.artifacts, [kept, lineage, loose, loose]) == [loose]
    assert p.artifacts.exists(kept) and p.artifacts.exists(lineage)
    assert not p.artifacts.exists(loose)
    assert collect(p.store, p.artifacts, [loose]) == []  # already gone: nothing to do


def test_a_writer_restores_a_blob_collected_after_its_put(api_platform):
    p = api_platform
    data = b"identical upload"
    key = p.artifacts.put_bytes(data)  # the upload stored the blob (it existed: no write) ...
    assert collect(p.store, p.artifacts, [key]) == [key]  # ... and a delete collected it
    with p.store.write() as s:
        tenant = Tenant(name="acme")
        s.add(tenant)
        s.flush()
        keep_stored(s, p.artifacts, key, lambda: p.artifacts.put_bytes(data))
        _file(s, tenant.id, key, "file-1")
    assert p.artifacts.get_bytes(key) == data
    assert collect(p.store, p.artifacts, [key]) == []  # referenced now


def test_the_key_lock_serializes_collection_and_new_references(api_platform):
    p = api_platform
    key = p.artifacts.put_bytes(b"contended")
    with p.store.write() as s:
        tenant = Tenant(name="acme")
        s.add(tenant)
    order: list[str] = []
    locked, release = threading.Event(), threading.Event()

    def writer() -> None:
        with p.store.write() as s:
            lock_key(s, key)
            locked.set()
            release.wait(5)
            _file(s, tenant.id, key, "file-1")
            order.append("referenced")

    thread = threading.Thread(target=writer)
    thread.start()
    assert locked.wait(5)
    collector = threading.Thread(target=lambda: order.append(
        f"collected {collect(p.store, p.artifacts, [key])}"))
    collector.start()
    collector.join(0.3)
    assert collector.is_alive(), "the collection waits for the writer's transaction"
    release.set()
    thread.join(5)
    collector.join(5)
    assert order == ["referenced", "collected []"]
    assert p.artifacts.exists(key)
