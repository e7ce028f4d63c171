"""Registering an adapter: unpack safely, validate against the base, store, add a version."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from services import registry
from services.adapter_validation import validate_adapter_dir
from services.archive import find_adapter_root, safe_extract
from services.names import NameKind, check_name
from services.platform import Platform
from services.store.models import AdapterVersion, Tenant, VersionState
from services.tenants import get_tenant


def register_adapter_dir(
    platform: Platform,
    tenant: Tenant | str,
    name: str,
    adapter_dir: Path,
    *,
    task: str = "chat",
    labels: list[str] | None = None,
    prompt_template: str | None = None,
    metrics: dict | None = None,
    lineage: dict | None = None,
    state: VersionState = VersionState.READY,
) -> AdapterVersion:
    """Validate ``adapter_dir`` and register it as the next version of (tenant, name)."""
    s = platform.settings
    check_name(name, NameKind.ADAPTER)
    registry.check_classification_spec(task, labels, prompt_template)
    info = validate_adapter_dir(
        adapter_dir, platform.base_model_dir, max_rank=s.max_lora_rank, max_bytes=s.max_adapter_bytes
    )
    key = platform.artifacts.put_dir(adapter_dir)
    lineage = {"base_model": platform.base_model_name, **(lineage or {})}
    with platform.store.write() as session:
        if isinstance(tenant, str):
            tenant = get_tenant(session, tenant)
        return registry.register_version(session, tenant, name, registry.NewVersion(
            info=info, artifact_key=key, base_fingerprint=platform.base_fingerprint, task=task,
            labels=labels, prompt_template=prompt_template, metrics=metrics, lineage=lineage,
            state=state))


def register_adapter_archive(
    platform: Platform, tenant: Tenant | str, name: str, archive: Path, **kwargs: Any
) -> AdapterVersion:
    """Like :func:`register_adapter_dir` for an uploaded .tar.gz of a PEFT directory."""
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-adapter-"))
    try:
        safe_extract(archive, tmp, max_bytes=platform.settings.max_adapter_bytes)
        return register_adapter_dir(platform, tenant, name, find_adapter_root(tmp), **kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
