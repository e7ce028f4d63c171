"""RayClusterRunner maps the Ray Jobs API onto the JobRunner protocol (fake client)."""

from __future__ import annotations

from dataclasses import dataclass

from training.runners.base import RunSpec, RunState
from training.runners.ray_cluster import RayClusterRunner, submission_id


@dataclass
class Info:
    status: str
    message: str | None = None
    error_type: str | None = None


class FakeJobsClient:
    """Behaves like ray.job_submission.JobSubmissionClient for the calls the runner makes."""

    def __init__(self):
        self.jobs: dict[str, Info] = {}
        self.submitted: list[dict] = []
        self.stopped: list[str] = []

    def get_job_info(self, sid):
        if sid not in self.jobs:
            raise RuntimeError(f"Request failed with status code 404: Job {sid} does not exist.")
        return self.jobs[sid]

    def submit_job(self, **kwargs):
        self.submitted.append(kwargs)
        self.jobs[kwargs["submission_id"]] = Info("PENDING")
        return kwargs["submission_id"]

    def stop_job(self, sid):
        self.stopped.append(sid)
        self.jobs[sid] = Info("STOPPED", "stopped by user")
        return True

    def get_job_logs(self, sid):
        return "log text"


def test_submit_is_idempotent_and_carries_env():
    client = FakeJobsClient()
    runner = RayClusterRunner("http://head:8265", client=client,
                              runtime_env={"working_dir": "/code", "env_vars": {"A": "1"}})
    spec = RunSpec(job_id="j1", entrypoint=["python", "-m", "training.recipe", "--config",
                                            "/x y.json"], env={"B": "2"})
    runner.submit(spec)
    runner.submit(spec)
    assert len(client.submitted) == 1
    call = client.submitted[0]
    assert call["submission_id"] == submission_id("j1") == "tuneloop-j1"
    assert call["entrypoint"] == "python -m training.recipe --config '/x y.json'"
    assert call["runtime_env"] == {"working_dir": "/code", "env_vars": {"A": "1", "B": "2"}}


def test_status_mapping_and_cancel():
    client = FakeJobsClient()
    runner = RayClusterRunner("http://head:8265", client=client)
    assert runner.status("nope").state is RunState.FAILED
    runner.submit(RunSpec(job_id="j", entrypoint=["true"]))
    assert runner.status("j").state is RunState.PENDING
    for ray_state, state in [("RUNNING", RunState.RUNNING), ("SUCCEEDED", RunState.SUCCEEDED)]:
        client.jobs["tuneloop-j"] = Info(ray_state)
        assert runner.status("j").state is state
    client.jobs["tuneloop-j"] = Info("FAILED", "exit 1", "JOB_ENTRYPOINT_COMMAND_ERROR")
    failed = runner.status("j")
    assert failed.state is RunState.FAILED and "JOB_ENTRYPOINT_COMMAND_ERROR" in failed.message
    client.jobs["tuneloop-j"] = Info("RUNNING")
    runner.cancel("j")
    assert client.stopped == ["tuneloop-j"]
    assert runner.status("j").state is RunState.CANCELLED
    runner.cancel("unknown")  # no-op
    assert runner.logs("j") == "log text"


def test_a_lost_run_is_submitted_again_as_the_next_attempt():
    client = FakeJobsClient()
    runner = RayClusterRunner("http://head:8265", client=client)
    spec = RunSpec(job_id="j", entrypoint=["true"])
    runner.submit(spec)
    client.jobs["tuneloop-j"] = Info("FAILED", "the driver's node died", "JOB_SUPERVISOR_ACTOR_DIED")
    runner.submit(spec)  # the job was queued again: a second attempt, never the same id
    assert [c["submission_id"] for c in client.submitted] == ["tuneloop-j", "tuneloop-j-2"]
    assert runner.status("j").state is RunState.PENDING  # the newest attempt's state
    runner.submit(spec)  # live: idempotent
    client.jobs["tuneloop-j-2"] = Info("SUCCEEDED")
    runner.submit(spec)  # succeeded: its result is in the job's workspace, nothing to rerun
    assert len(client.submitted) == 2
    assert runner.status("j").state is RunState.SUCCEEDED
    client.jobs["tuneloop-j-2"] = Info("RUNNING")
    runner.cancel("j")
    assert client.stopped == ["tuneloop-j-2"]
