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
        jobs = {c["name"] for c in inspect(store.engine).get_columns("fine_tuning_jobs")}
        assert "result_files" in jobs  # 0010
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


def test_migration_0009_keeps_jobs_and_lets_their_finished_files_go(database_url):
    """The file foreign keys of jobs and retrain runs are dropped on a store with rows (SQLite
    rebuilds the table that job events reference); the job keeps naming a deleted file."""
    upgrade(database_url, "0008")
    store = Store(database_url)
    with store.write() as s:
        s.execute(text("INSERT INTO tenants (id, name, state, created_at) "
                       "VALUES (1, 'a', 'active', CURRENT_TIMESTAMP)"))
        s.execute(text(
            "INSERT INTO dataset_files (id, tenant_id, filename, purpose, bytes, sha256, status, "
            "task, format, stats, created_at) VALUES ('file-1', 1, 'd.jsonl', 'fine-tune', 1, "
            "'k', 'processed', 'chat', 'jsonl', '{}', CURRENT_TIMESTAMP)"))
        s.execute(text(
            "INSERT INTO fine_tuning_jobs (id, tenant_id, status, model, adapter_name, task, "
            "training_file, hyperparameters, auto_promote, seed, run_name, runner, "
            "cancel_requested, pause_requested, progress, created_at) VALUES ('ftjob-1', 1, "
            "'succeeded', 'base', 'bot', 'chat', 'file-1', '{}', false, 0, 'r', 'local', false, "
            "false, '{}', CURRENT_TIMESTAMP)"))
        s.execute(text("INSERT INTO fine_tuning_events (job_id, type, level, message, created_at) "
                       "VALUES ('ftjob-1', 'created', 'info', 'm', CURRENT_TIMESTAMP)"))
    store.close()
    upgrade(database_url)
    store = Store(database_url)
    try:
        inspector = inspect(store.engine)
        for table in ("fine_tuning_jobs", "retrain_runs"):
            assert "dataset_files" not in {fk["referred_table"]
                                           for fk in inspector.get_foreign_keys(table)}
        assert "fine_tuning_jobs" in {fk["referred_table"]
                                      for fk in inspector.get_foreign_keys("fine_tuning_events")}
        assert "last_version" in {c["name"] for c in inspector.get_columns("adapters")}
        with store.write() as s:
            s.execute(text("DELETE FROM dataset_files WHERE id = 'file-1'"))
        with store.read() as s:
            assert s.execute(text("SELECT training_file FROM fine_tuning_jobs")).scalar() == "file-1"
            assert s.execute(text("SELECT count(*) FROM fine_tuning_events")).scalar() == 1
        if store.is_sqlite:  # the migration's pragma does not outlive it
            with store.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        store.close()
