"""LocalRayRunner against the session's real Ray: success, failure, cancel frees the CPUs."""

from __future__ import annotations

import sys
import time

import pytest

from training.runners.base import RunSpec, RunState
from training.runners.local import LocalRayRunner, recipe_entrypoint

pytestmark = [pytest.mark.integration, pytest.mark.ray]

HOLD_CPU = """
import ray, time
ray.init()
@ray.remote(num_cpus=1)
class Holder:
    def ping(self):
        return 1
h = Holder.remote()
ray.get(h.ping.remote())
print("holding", flush=True)
time.sleep(600)
"""


def available_cpus() -> float:
    import ray

    return ray.available_resources().get("CPU", 0.0)


def wait_for(predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


@pytest.fixture
def runner(ray_cluster, tmp_path):
    runner = LocalRayRunner(tmp_path / "logs", ray_address=ray_cluster, cancel_grace_s=5)
    yield runner
    runner.close()


def test_success_and_failure_and_idempotent_submit(runner):
    ok = RunSpec(job_id="ok", entrypoint=[sys.executable, "-c",
                                          "import ray; ray.init(); print(ray.cluster_resources())"])
    runner.submit(ok)
    runner.submit(ok)  # idempotent: still one run
    assert runner.wait("ok", timeout_s=120).state is RunState.SUCCEEDED
    assert "CPU" in runner.log_tail("ok")

    bad = RunSpec(job_id="bad", entrypoint=[sys.executable, "-c", "raise SystemExit('boom')"])
    runner.submit(bad)
    status = runner.wait("bad", timeout_s=60)
    assert status.state is RunState.FAILED
    assert "boom" in status.message
    assert runner.status("never-submitted").state is RunState.FAILED
    # a failed run submitted again (a lost run queued again) is a new run; a succeeded one is not
    runner.submit(RunSpec(job_id="bad", entrypoint=[sys.executable, "-c", "print('again')"]))
    assert runner.wait("bad", timeout_s=60).state is RunState.SUCCEEDED
    assert "again" in runner.log_tail("bad")
    runner.submit(RunSpec(job_id="bad", entrypoint=[sys.executable, "-c", "raise SystemExit(3)"]))
    assert runner.status("bad").state is RunState.SUCCEEDED


def test_cancel_stops_the_run_and_frees_its_workers(runner):
    before = available_cpus()
    runner.submit(RunSpec(job_id="hold", entrypoint=[sys.executable, "-c", HOLD_CPU]))
    assert wait_for(lambda: "holding" in runner.log_tail("hold"), 120), runner.log_tail("hold")
    assert available_cpus() <= before - 1
    assert runner.status("hold").state is RunState.RUNNING
    runner.cancel("hold")
    assert runner.status("hold").state is RunState.CANCELLED
    assert wait_for(lambda: available_cpus() >= before, 60), "the actor's CPU was not freed"
    # a paused job resumed: the stopped run is replaced by a new one
    runner.submit(RunSpec(job_id="hold", entrypoint=[sys.executable, "-c", "print('resumed')"]))
    assert runner.wait("hold", timeout_s=60).state is RunState.SUCCEEDED


def test_recipe_entrypoint_command(tmp_path):
    command = recipe_entrypoint(tmp_path / "c.json")
    assert command[1:4] == ["-m", "training.recipe", "--config"]


def test_a_runner_without_an_address_starts_its_own_ray_from_any_thread(tmp_path):
    """The path of a plain ``tuneloop serve``: the job manager's worker thread submits the first
    run, which starts the local Ray head; the driver joins it with token auth; ``close`` stops
    the whole head process tree."""
    import os
    import threading
    from pathlib import Path

    runner = LocalRayRunner(tmp_path / "logs", num_cpus=2, cancel_grace_s=5)
    spec = RunSpec(job_id="threaded", entrypoint=[sys.executable, "-c", (
        "import os, ray; ray.init(); "
        "print('auth', os.environ['RAY_AUTH_MODE'], 'cpus', ray.cluster_resources()['CPU'])")])
    env = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_AUTH_MODE") if k in os.environ}
    try:
        thread = threading.Thread(target=runner.submit, args=(spec,))
        thread.start()
        thread.join()
        status = runner.wait("threaded", timeout_s=120)
        assert status.state is RunState.SUCCEEDED, runner.log_tail("threaded")
        assert "auth token cpus 2.0" in runner.log_tail("threaded")
        head = runner._head
        temp_dir, pid = head.temp_dir, head._process.pid
        assert temp_dir.exists() and head.address.startswith("127.0.0.1:")
    finally:
        runner.close()
        os.environ.update(env)
    assert not temp_dir.exists()
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    # nothing of that head is left: no process names its temp dir
    def left() -> list[str]:
        return [p.name for p in Path("/proc").iterdir() if p.name.isdigit()
                and str(temp_dir) in _cmdline(p)]

    assert wait_for(lambda: not left(), 15), left()


def _cmdline(proc) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
