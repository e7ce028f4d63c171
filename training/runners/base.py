"""The one interface every training job runner implements (local Ray, Ray cluster, KubeRay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class RunState(StrEnum):
    """Lifecycle of one submitted run, as the runner sees it."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


@dataclass(frozen=True)
class RunSpec:
    """What to run: a tuneloop job id and the command that runs the training recipe for it."""

    job_id: str
    entrypoint: list[str]
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: int = 0
    memory_per_worker: str | None = None
    image: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunStatus:
    state: RunState
    message: str | None = None


class JobRunner(Protocol):
    """Submits runs and reports on them. ``submit`` is idempotent per ``job_id``."""

    def submit(self, spec: RunSpec) -> None: ...

    def status(self, job_id: str) -> RunStatus: ...

    def cancel(self, job_id: str) -> None: ...
