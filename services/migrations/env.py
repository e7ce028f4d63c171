"""Alembic environment: runs migrations against the URL tuneloop passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from services.store.db import make_engine
from services.store.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
if url is None:
    raise RuntimeError("alembic needs sqlalchemy.url; run migrations through tuneloop, which sets it")
engine = make_engine(url)
if url.startswith("sqlite"):
    engine = engine.execution_options(sqlite_begin="IMMEDIATE")

with engine.connect() as connection:
    if url.startswith("sqlite"):
        # Batch mode rebuilds a table (copy, drop, rename); dropping it must not run the foreign
        # keys of the tables that reference it. SQLite changes this only outside a transaction,
        # so it is set on the driver's connection before the migration's transaction begins.
        driver = connection.connection.driver_connection
        assert driver is not None
        driver.execute("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
del pool
