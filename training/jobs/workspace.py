"""A fine-tuning job's workspace in the artifact store: ``<artifacts root>/jobs/<job_id>/``.

Everything the server and a job's training run hand each other goes through it, so the run can
happen on any machine that has the artifact store's credentials (the local Ray, a Ray cluster, a
KubeRay RayJob) with nothing mounted:

- ``job.json`` (server -> run, :class:`JobSpec`): the training config without local paths, the
  artifact keys of the dataset files, the parent adapter and the champion, the base model's
  fingerprint;
- ``progress/`` (run -> server): the run's events, one object per writing process
  (:mod:`training.progress`);
- ``ray/``: Ray Train's storage; a run submitted again under the same run name resumes from the
  latest checkpoint there, whichever machine runs it;
- ``result.json`` (run -> server): the trained adapter's artifact key, the run's metrics and the
  job's checks.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from services.artifacts import write_whole

_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SPEC = "job.json"
RESULT = "result.json"
# TrainConfig fields that name local paths: the training machine fills them in.
LOCAL_FIELDS = ("base_model", "output_dir", "train_file", "eval_file", "parent_adapter")


class WorkspaceMissing(RuntimeError):
    """The job's workspace is not in the artifact store this machine sees."""


@dataclass(frozen=True)
class JobWorkspace:
    url: str

    @classmethod
    def of(cls, artifacts_url: str, job_id: str) -> JobWorkspace:
        if not _JOB_ID.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r} cannot name a workspace")
        fs, root = fsspec.core.url_to_fs(artifacts_url)
        return cls(fs.unstrip_protocol(f"{root.rstrip('/')}/jobs/{job_id}"))

    @property
    def progress_url(self) -> str:
        return f"{self.url}/progress"

    @property
    def ray_url(self) -> str:
        return f"{self.url}/ray"

    def _fs(self) -> tuple[fsspec.AbstractFileSystem, str]:
        fs, root = fsspec.core.url_to_fs(self.url)
        return fs, root.rstrip("/")

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        fs, root = self._fs()
        write_whole(fs, f"{root}/{name}", json.dumps(data, indent=2, default=str).encode())

    def read_json(self, name: str) -> dict[str, Any] | None:
        fs, root = self._fs()
        fs.invalidate_cache(root)
        try:
            return json.loads(fs.cat_file(f"{root}/{name}"))
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        """Remove the workspace (checkpoints included)."""
        fs, root = self._fs()
        if fs.exists(root):
            fs.rm(root, recursive=True)


@dataclass(frozen=True)
class DataInput:
    key: str  # artifact key of the file's bytes
    suffix: str  # ".jsonl" or ".csv": how the recipe reads it


@dataclass(frozen=True)
class JobSpec:
    """What a training run needs, by artifact key and URL only (``job.json``)."""

    artifacts_url: str
    config: dict[str, Any]  # TrainConfig fields, LOCAL_FIELDS blank; progress/storage are URLs
    base_fingerprint: str
    training: DataInput
    validation: DataInput | None = None
    parent_key: str | None = None
    # the champion to score: {"version", "skipped"} or {"version", "labels", "prompt_template",
    # "artifact_key"} (training.jobs.champion.champion_spec)
    champion: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        validation = data.get("validation")
        return cls(artifacts_url=data["artifacts_url"], config=dict(data["config"]),
                   base_fingerprint=data["base_fingerprint"],
                   training=DataInput(**data["training"]),
                   validation=DataInput(**validation) if validation else None,
                   parent_key=data.get("parent_key"), champion=dict(data.get("champion") or {}))


def read_spec(workspace: JobWorkspace) -> JobSpec:
    data = workspace.read_json(SPEC)
    if data is None:
        raise WorkspaceMissing(
            f"the job's workspace {workspace.url} has no {SPEC} on this machine: the artifact "
            "store must be one every machine shares (TUNELOOP_ARTIFACTS_URL=s3://..., with the "
            "AWS_* credentials on the training machines too)")
    return JobSpec.from_dict(data)
