"""Registering an adapter: unpack safely, validate against the base, store, add a version."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from services import registry
from services.adapter_validation import (
    ADAPTER_FILES,
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterInfo,
    validate_adapter_dir,
)
from services.archive import find_adapter_root, safe_extract
from services.artifact_gc import keep_stored
from services.names import NameKind, check_name
from services.platform import Platform
from services.quotas import check_adapter_quota
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
    """Validate ``adapter_dir`` and register it as the next version of (tenant, name).

    Raises InvalidInput / TooLarge naming the problem, Forbidden (``quota_exceeded``) when the
    tenant is at its adapter or version quota (checked before any validation)."""
    s = platform.settings
    check_name(name, NameKind.ADAPTER)
    check_room(platform, tenant, name)
    registry.check_classification_spec(task, labels, prompt_template, max_labels=s.max_labels,
                                       max_label_chars=s.max_label_chars)
    info = validate_adapter_dir(
        adapter_dir, platform.base_model_dir, max_rank=s.max_lora_rank, max_bytes=s.max_adapter_bytes
    )
    lineage = {"base_model": platform.base_model_name, **(lineage or {})}
    with tempfile.TemporaryDirectory(prefix="tuneloop-adapter-clean-") as staging:
        info = _stage_allowed_files(adapter_dir, info, Path(staging))
        key = platform.artifacts.put_dir(Path(staging))
        with platform.store.write() as session:
            # a delete may have collected an identical blob since put_dir (services/artifact_gc)
            keep_stored(session, platform.artifacts, key,
                        lambda: platform.artifacts.put_dir(Path(staging)))
            if isinstance(tenant, str):
                tenant = get_tenant(session, tenant)
            return registry.register_version(session, tenant, name, registry.NewVersion(
                info=info, artifact_key=key, base_fingerprint=platform.base_fingerprint,
                task=task, labels=labels, prompt_template=prompt_template, metrics=metrics,
                lineage=lineage, state=state))


def check_room(platform: Platform, tenant: Tenant | str, name: str) -> None:
    """Raise Forbidden when (tenant, name) cannot get one more version (services.quotas)."""
    with platform.store.read() as session:
        row = get_tenant(session, tenant) if isinstance(tenant, str) else tenant
        check_adapter_quota(session, platform.settings, row, name)


def _stage_allowed_files(adapter_dir: Path, info: AdapterInfo, staging: Path) -> AdapterInfo:
    """Put in ``staging`` only what an adapter may carry (:data:`ADAPTER_FILES`): the config
    rewritten from its checked keys and the validated weights; returns ``info`` with their size."""
    (staging / CONFIG_FILE).write_text(json.dumps(info.config, indent=2, sort_keys=True))
    try:
        os.link(adapter_dir / WEIGHTS_FILE, staging / WEIGHTS_FILE)
    except OSError:  # another filesystem, or links not supported: copy
        shutil.copyfile(adapter_dir / WEIGHTS_FILE, staging / WEIGHTS_FILE)
    size = sum((staging / name).stat().st_size for name in ADAPTER_FILES)
    return dataclasses.replace(info, size_bytes=size)


def register_adapter_archive(
    platform: Platform, tenant: Tenant | str, name: str, archive: Path, **kwargs: Any
) -> AdapterVersion:
    """Like :func:`register_adapter_dir` for an uploaded .tar.gz of a PEFT directory."""
    check_name(name, NameKind.ADAPTER)
    check_room(platform, tenant, name)  # before unpacking anything
    tmp = Path(tempfile.mkdtemp(prefix="tuneloop-adapter-"))
    try:
        safe_extract(archive, tmp, max_bytes=platform.settings.max_adapter_bytes)
        return register_adapter_dir(platform, tenant, name, find_adapter_root(tmp), **kwargs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
