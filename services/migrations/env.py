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
