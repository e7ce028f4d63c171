"""RayClusterRunner: runs jobs on an existing Ray cluster through the Ray Jobs API
(``ray.job_submission.JobSubmissionClient``, dashboard address such as ``http://head:8265``).

The cluster must have tuneloop installed (or get it through ``runtime_env``); the entrypoint is
the same command the local runner runs. Submission ids are ``tuneloop-<job_id>`` (then
``-2``, ``-3``... when a lost run is submitted again), so submit is idempotent while a run is
live or succeeded, and status survives a tuneloop restart (the cluster remembers its jobs).
"""

from __future__ import annotations

import shlex
from typing import Any

from training.runners.base import RunSpec, RunState, RunStatus

_STATES = {
    "PENDING": RunState.PENDING,
    "RUNNING": RunState.RUNNING,
    "SUCCEEDED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "STOPPED": RunState.CANCELLED,
}


def submission_id(job_id: str, attempt: int = 1) -> str:
    """``tuneloop-<job_id>``, then ``tuneloop-<job_id>-2``... for runs submitted again after a
    run was lost (the Jobs API never reuses a submission id)."""
    return f"tuneloop-{job_id}" + (f"-{attempt}" if attempt > 1 else "")


MAX_ATTEMPTS = 10


class RayClusterRunner:
    """JobRunner over the Ray Jobs API of the cluster at ``address``."""

    def __init__(self, address: str, *, runtime_env: dict[str, Any] | None = None,
                 client: Any | None = None) -> None:
        """``runtime_env`` is merged into every job's (e.g. ``working_dir``, ``pip``);
        ``client`` replaces the JobSubmissionClient (tests)."""
        self.address = address
        self.runtime_env = runtime_env or {}
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = JobSubmissionClient(self.address)
        return self._client

    def _info(self, sid: str) -> Any | None:
        try:
            return self.client.get_job_info(sid)
        except RuntimeError:  # the client raises RuntimeError for an unknown submission id
            return None

    def _latest(self, job_id: str) -> tuple[int, Any | None]:
        """(attempt, info) of the job's newest submission; (0, None) before the first."""
        latest: tuple[int, Any | None] = (0, None)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            info = self._info(submission_id(job_id, attempt))
            if info is None:
                break
            latest = (attempt, info)
        return latest

    def submit(self, spec: RunSpec) -> None:
        """Submit ``spec.entrypoint`` unless a run of the job is live or succeeded; after a
        failed or stopped run, as the next attempt (it resumes from the job's checkpoints)."""
        attempt, info = self._latest(spec.job_id)
        if info is not None and _state(info) in (RunState.PENDING, RunState.RUNNING,
                                                 RunState.SUCCEEDED):
            return
        env_vars = {**self.runtime_env.get("env_vars", {}), **spec.env}
        runtime_env = {**self.runtime_env, "env_vars": env_vars}
        self.client.submit_job(
            entrypoint=shlex.join(spec.entrypoint),
            submission_id=submission_id(spec.job_id, attempt + 1),
            runtime_env=runtime_env,
            metadata={"tuneloop_job_id": spec.job_id},
        )

    def status(self, job_id: str) -> RunStatus:
        attempt, info = self._latest(job_id)
        if info is None:
            return RunStatus(RunState.FAILED, f"the Ray cluster at {self.address} has no job "
                             f"{submission_id(job_id)}; submit it again")
        state = _state(info)
        message = info.message
        if state is RunState.FAILED and getattr(info, "error_type", None):
            message = f"{info.error_type}: {message}"
        return RunStatus(state, message)

    def cancel(self, job_id: str) -> None:
        """Ask the cluster to stop the job's live run (its driver, then the Ray Train workers
        it owns)."""
        attempt, info = self._latest(job_id)
        if info is not None and not _state(info).is_terminal:
            self.client.stop_job(submission_id(job_id, attempt))

    def logs(self, job_id: str) -> str:
        """The output of the job's newest run so far."""
        attempt, _ = self._latest(job_id)
        return self.client.get_job_logs(submission_id(job_id, max(attempt, 1)))


def _state(info: Any) -> RunState:
    return _STATES.get(str(getattr(info.status, "value", info.status)), RunState.FAILED)
