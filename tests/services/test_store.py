"""Migrations build the schema from empty on SQLite and PostgreSQL, and round-trip."""

from __future__ import annotations

from alembic import command
from sqlalchemy import inspect, text

from services.store.db import Store, alembic_config, current_revision, upgrade

TABLES = {
    "tenants", "api_keys", "admin_keys", "adapters", "adapter_versions", "champion_changes",
    "requests", "feedback", "dataset_files", "fine_tuning_jobs", "fine_tuning_checkpoints",
    "fine_tuning_events",
}


def test_migrations_create_schema_from_empty(database_url):
    assert current_revision(database_url) is None
    upgrade(database_url)
    store = Store(database_url)
    try:
        names = set(inspect(store.engine).get_table_names())
        assert TABLES <= names
        assert "alembic_version" in names
        assert current_revision(database_url) is not None
    finally:
        store.close()


def test_migrations_downgrade_and_upgrade_again(database_url):
    upgrade(database_url)
    command.downgrade(alembic_config(database_url), "base")
    store = Store(database_url)
    assert not (TABLES & set(inspect(store.engine).get_table_names()))
    store.close()
    upgrade(database_url)
    assert current_revision(database_url) is not None


def test_sqlite_runs_in_wal_mode(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    store = Store(url)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_write_session_commits_and_rolls_back(database_url):
    upgrade(database_url)
    store = Store(database_url)
    with store.write() as s:
        s.execute(text("INSERT INTO tenants (name, state, created_at) VALUES ('a', 'active', CURRENT_TIMESTAMP)"))
    try:
        with store.write() as s:
            s.execute(text("INSERT INTO tenants (name, state, created_at) VALUES ('b', 'active', CURRENT_TIMESTAMP)"))
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with store.read() as s:
        assert s.execute(text("SELECT name FROM tenants ORDER BY name")).scalars().all() == ["a"]
    store.close()
