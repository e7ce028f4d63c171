"""RayClusterRunner: runs jobs on an existing Ray cluster through the Ray Jobs API
(``ray.job_submission.JobSubmissionClient``, dashboard address such as ``http://head:8265``).

The cluster must have tuneloop installed (or get it through ``runtime_env``); the entrypoint is
the same command the local runner runs. Submission ids are ``tuneloop-<job_id>``, so submit is
idempotent and status survives a tuneloop restart (the cluster remembers its jobs).
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


def submission_id(job_id: str) -> str:
    return f"tuneloop-{job_id}"


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

    def _exists(self, sid: str) -> bool:
        try:
            self.client.get_job_info(sid)
        except RuntimeError:  # the client raises RuntimeError for an unknown submission id
            return False
        return True

    def submit(self, spec: RunSpec) -> None:
        """Submit ``spec.entrypoint`` as job ``tuneloop-<job_id>`` unless it was submitted."""
        sid = submission_id(spec.job_id)
        if self._exists(sid):
            return
        env_vars = {**self.runtime_env.get("env_vars", {}), **spec.env}
        runtime_env = {**self.runtime_env, "env_vars": env_vars}
        self.client.submit_job(
            entrypoint=shlex.join(spec.entrypoint),
            submission_id=sid,
            runtime_env=runtime_env,
            metadata={"tuneloop_job_id": spec.job_id},
        )

    def status(self, job_id: str) -> RunStatus:
        sid = submission_id(job_id)
        try:
            info = self.client.get_job_info(sid)
        except RuntimeError:
            return RunStatus(RunState.FAILED, f"the Ray cluster at {self.address} has no job "
                             f"{sid}; submit it again")
        state = _STATES.get(str(getattr(info.status, "value", info.status)), RunState.FAILED)
        message = info.message
        if state is RunState.FAILED and getattr(info, "error_type", None):
            message = f"{info.error_type}: {message}"
        return RunStatus(state, message)

    def cancel(self, job_id: str) -> None:
        """Ask the cluster to stop the job (its driver, then the Ray Train workers it owns)."""
        sid = submission_id(job_id)
        if self._exists(sid):
            self.client.stop_job(sid)

    def logs(self, job_id: str) -> str:
        """The job driver's output so far."""
        return self.client.get_job_logs(submission_id(job_id))
