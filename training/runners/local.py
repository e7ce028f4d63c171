"""LocalRayRunner: the embedded default. tuneloop starts (or joins) a Ray on this machine and
runs each job's entrypoint as a subprocess that connects to it through ``RAY_ADDRESS``.

Each run gets its own process group and log file. ``cancel`` terminates the group (SIGTERM,
then SIGKILL after a grace period); the Ray Train controller and workers are actors owned by
that driver process, so Ray reclaims them and their CPUs when it exits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from training.runners.base import RunSpec, RunState, RunStatus

LOG_TAIL_CHARS = 2000


@dataclass
class _Run:
    process: subprocess.Popen
    log_path: Path
    cancelled: bool = False


class LocalRayRunner:
    """Runs entrypoints as local subprocesses against a Ray started here (one per runner)."""

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        cancel_grace_s: float = 10.0,
    ):
        """``ray_address``: join that Ray instead of starting one; ``num_cpus``: size of the local
        Ray (default: all cores). Logs of each run go to ``<log_dir>/<job_id>.log``."""
        self.log_dir = Path(log_dir)
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.cancel_grace_s = cancel_grace_s
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._started_ray = False

    def address(self) -> str:
        """The Ray GCS address runs connect to; starts the local Ray on first use."""
        import ray

        if self.ray_address is not None:
            return self.ray_address
        if not ray.is_initialized():
            ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
            self._started_ray = True
        self.ray_address = ray.get_runtime_context().gcs_address
        return self.ray_address

    def submit(self, spec: RunSpec) -> None:
        """Start ``spec.entrypoint`` unless a run for ``spec.job_id`` exists (idempotent)."""
        with self._lock:
            if spec.job_id in self._runs:
                return
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{_safe(spec.job_id)}.log"
            env = {**os.environ, **spec.env, "RAY_ADDRESS": self.address()}
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    spec.entrypoint, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # own process group: cancel kills all of it
                )
            self._runs[spec.job_id] = _Run(process, log_path)

    def status(self, job_id: str) -> RunStatus:
        """State of the run; an unknown id (e.g. lost in a tuneloop restart) reads as failed."""
        run = self._runs.get(job_id)
        if run is None:
            return RunStatus(RunState.FAILED, f"no run for job {job_id} in this runner (was "
                             "tuneloop restarted?); submit it again")
        code = run.process.poll()
        if run.cancelled:
            return RunStatus(RunState.CANCELLED, "cancelled") if code is not None else \
                RunStatus(RunState.RUNNING, "cancelling")
        if code is None:
            return RunStatus(RunState.RUNNING)
        if code == 0:
            return RunStatus(RunState.SUCCEEDED)
        return RunStatus(RunState.FAILED, f"exit code {code}: {self.log_tail(job_id)}")

    def cancel(self, job_id: str) -> None:
        """Stop the run's whole process group and wait for it to exit (no-op when done)."""
        run = self._runs.get(job_id)
        if run is None or run.process.poll() is not None:
            return
        run.cancelled = True
        _signal_group(run.process, signal.SIGTERM)
        try:
            run.process.wait(timeout=self.cancel_grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(run.process, signal.SIGKILL)
            run.process.wait()

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> RunStatus:
        """Block until the run is terminal (or ``timeout_s``); returns its last status."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status.state.is_terminal or (deadline and time.monotonic() > deadline):
                return status
            time.sleep(poll_s)

    def log_tail(self, job_id: str, chars: int = LOG_TAIL_CHARS) -> str:
        run = self._runs.get(job_id)
        if run is None or not run.log_path.exists():
            return ""
        with open(run.log_path, "rb") as f:
            f.seek(max(0, run.log_path.stat().st_size - chars))
            return f.read().decode("utf-8", errors="replace")

    def close(self) -> None:
        """Cancel every running run and stop the Ray this runner started."""
        for job_id in list(self._runs):
            self.cancel(job_id)
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _safe(job_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in job_id)


def recipe_entrypoint(config_path: str | os.PathLike, python: str | None = None) -> list[str]:
    """The command that runs :mod:`training.recipe` on a config file, with this interpreter."""
    import sys

    return [python or sys.executable, "-m", "training.recipe", "--config", str(config_path)]
