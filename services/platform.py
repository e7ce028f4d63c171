"""Assembles what every tuneloop process shares: settings, store, artifacts, the base model.

Built explicitly (``Platform.open(settings)``), never at import time, so tests build their own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from services.artifacts import ArtifactStore
from services.base_model import model_fingerprint
from services.errors import InvalidInput
from services.settings import Settings
from services.store.db import Store
from services.tenants import ensure_admin_key

log = logging.getLogger("tuneloop")


@dataclass
class Platform:
    settings: Settings
    store: Store
    artifacts: ArtifactStore
    generated_admin_key: str | None = None

    @classmethod
    def open(cls, settings: Settings, *, migrate: bool = True) -> Platform:
        """Connect the store (running migrations) and artifact store; make the admin key if needed."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(settings.resolved_database_url)
        if migrate:
            store.migrate()
        artifacts = ArtifactStore(
            settings.resolved_artifacts_url, cache_dir=settings.data_dir / "cache" / "artifacts"
        )
        configured = settings.admin_key.get_secret_value() if settings.admin_key else None
        with store.write() as session:
            generated = ensure_admin_key(session, configured)
        return cls(settings=settings, store=store, artifacts=artifacts, generated_admin_key=generated)

    @property
    def base_model_dir(self) -> Path:
        path = self.settings.resolved_base_model
        if not (path / "config.json").is_file():
            raise InvalidInput(
                f"base model directory {path} does not exist or has no config.json; run "
                "`tuneloop models import-default` or set TUNELOOP_BASE_MODEL to a local "
                "Hugging Face model directory"
            )
        return path

    @cached_property
    def base_fingerprint(self) -> str:
        return model_fingerprint(self.base_model_dir)

    @property
    def base_model_name(self) -> str:
        return self.settings.resolved_base_model_name

    def close(self) -> None:
        self.store.close()
