"""LocalRayRunner: the embedded default. tuneloop starts (or joins) a Ray on this machine and
runs each job's entrypoint as a subprocess that connects to it through ``RAY_ADDRESS``.

The Ray it starts is a separate process tree (:class:`training.runners.ray_head.LocalRayHead`),
started on the first submit from whatever thread submits, stopped by :meth:`close` and, should
tuneloop die, by the head's own supervisor.

Each run gets its own process group, log file and pid file. ``cancel`` terminates the group
(SIGTERM, then SIGKILL after a grace period); the Ray Train controller and workers are actors
owned by that driver process, so Ray reclaims them and their CPUs when it exits. A run left
behind by a tuneloop that died is stopped before the same job is submitted again (pid file).
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
from training.runners.ray_head import LocalRayHead

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
    ) -> None:
        """``ray_address``: join that Ray instead of starting one; ``num_cpus``: size of the local
        Ray (default: all cores). Logs of each run go to ``<log_dir>/<job_id>.log``."""
        self.log_dir = Path(log_dir)
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.cancel_grace_s = cancel_grace_s
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._head: LocalRayHead | None = None

    def address(self) -> str:
        """The Ray GCS address runs connect to; starts the local Ray head on first use (and
        again if it died)."""
        return self._ray_env()["RAY_ADDRESS"]

    def _ray_env(self) -> dict[str, str]:
        if self.ray_address is not None:
            return {"RAY_ADDRESS": self.ray_address}
        if self._head is None:
            self._head = LocalRayHead(num_cpus=self.num_cpus)
        self._head.start()
        return self._head.driver_env()

    def submit(self, spec: RunSpec) -> None:
        """Start ``spec.entrypoint`` unless a run of ``spec.job_id`` is live or succeeded
        (idempotent); after a failed or stopped run (a paused job resumed, a lost run queued
        again) a new run starts, which resumes from the job's checkpoints."""
        with self._lock:
            existing = self._runs.get(spec.job_id)
            if existing is not None and existing.process.poll() in (None, 0) \
                    and not existing.cancelled:
                return
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{_safe(spec.job_id)}.log"
            pid_path = self.log_dir / f"{_safe(spec.job_id)}.pid"
            stop_orphan(pid_path, spec.job_id, self.cancel_grace_s)
            env = {**os.environ, **spec.env, **self._ray_env()}
            if self._head is not None:
                env.pop("RAY_AUTH_TOKEN", None)  # the head's token file is the one to use
            with open(log_path, "ab") as log:
                process = subprocess.Popen(
                    spec.entrypoint, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # own process group: cancel kills all of it
                )
            pid_path.write_text(str(process.pid), encoding="utf-8")
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
        """Cancel every running run and stop the Ray head this runner started."""
        for job_id in list(self._runs):
            self.cancel(job_id)
        if self._head is not None:
            self._head.stop()
            self._head = None


def stop_orphan(pid_path: Path, job_id: str, grace_s: float) -> bool:
    """Stop the process group a previous tuneloop started for ``job_id`` if it still runs (its
    command line names the job); True when there was one."""
    try:
        pid = int(pid_path.read_text(encoding="utf-8").strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return False
    if job_id not in cmdline:
        return False  # the pid was reused by something else
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and \
            not _is_zombie(pid):
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


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
