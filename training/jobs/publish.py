"""Publish a finished run: register the adapter as the next version with metrics and lineage,
then promote it when the job asked for ``auto_promote``."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from services import registry
from services.adapter_intake import register_adapter_dir
from services.platform import Platform
from services.store.models import AdapterVersion, DatasetFile, FineTuningJob, Tenant

# (tenant, adapter name, new version) -> None: e.g. load and probe it on the engines first.
PromoteHook = Callable[[Tenant, str, int], None]


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of this checkout (``+dirty`` with local changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "training"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"tuneloop=={version('tuneloop')}"
        except PackageNotFoundError:
            return "unknown"


def lineage_for(platform: Platform, job: FineTuningJob, files: dict[str, DatasetFile | None],
                parent_ref: str | None, metrics: dict[str, Any]) -> dict[str, Any]:
    def describe(row: DatasetFile | None) -> dict | None:
        return None if row is None else {"id": row.id, "sha256": row.sha256,
                                         "filename": row.filename, "examples": row.stats.get(
                                             "examples")}

    return {
        "source": "fine_tuning_job", "job_id": job.id, "run_name": job.run_name,
        "training_file": describe(files.get("training")),
        "validation_file": describe(files.get("validation")),
        "base_fingerprint": platform.base_fingerprint, "parent_version": parent_ref,
        "hyperparameters": {**job.hyperparameters, "seed": job.seed,
                            "resolved": metrics.get("hyperparameters")},
        "code_version": code_version(), "runner": job.runner,
    }


def publish(platform: Platform, job: FineTuningJob, output_dir: Path, *,
            files: dict[str, DatasetFile | None], parent_ref: str | None,
            promote_hook: PromoteHook | None = None) -> tuple[AdapterVersion, bool]:
    """Register ``output_dir/adapter``; returns (version, promoted).

    The registry makes the first version of a new adapter its champion; later versions become
    champion only with ``auto_promote`` (through ``promote_hook`` when serving runs here).
    """
    summary = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics = {"eval": summary.get("eval") or {}, "train": summary.get("train") or {},
               "datasets": summary.get("datasets") or {},
               "wall_time_s": summary.get("wall_time_s"), "job_id": job.id}
    with platform.store.read() as session:
        tenant = session.get(Tenant, job.tenant_id)
        session.expunge(tenant)
    version = register_adapter_dir(
        platform, tenant, job.adapter_name, output_dir / "adapter", task=job.task,
        labels=job.labels if job.task == "classification" else None,
        prompt_template=job.prompt_template if job.task == "classification" else None,
        metrics=metrics, lineage=lineage_for(platform, job, files, parent_ref, summary))
    promoted = False
    if job.auto_promote:
        if promote_hook is not None:
            promote_hook(tenant, job.adapter_name, version.version)
        else:
            with platform.store.write() as session:
                registry.promote(session, tenant, job.adapter_name, version.version,
                                 f"auto_promote by fine-tuning job {job.id}")
        promoted = True
    return version, promoted
