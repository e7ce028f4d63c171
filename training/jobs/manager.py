"""The background job manager: validates new jobs, runs queued ones (``concurrency`` at a time,
oldest first) through the configured runner, and recovers jobs a dead process left ``running``.

The queue is the store itself (jobs in ``queued``), so jobs created by any process (the API, the
CLI) are picked up, survive restarts, and two managers never run one job (claims are
compare-and-set transitions). A running job's owner refreshes its heartbeat every poll; a job
whose owner stopped heartbeating is recovered:

- runners whose runs outlive tuneloop (``ray``, ``kuberay``): adopted, followed to its end;
- the ``local`` runner (its runs die with the process that started them): queued again under
  the same run name, so it resumes from its latest checkpoint (Ray Train finds the run's
  checkpoints in its storage path) or, without one, starts over; after
  ``MAX_AUTOMATIC_RESTARTS`` such restarts (a job that keeps taking tuneloop down, e.g. out of
  memory) it is failed with a reason instead. A job whose cancel was requested is cancelled.

A graceful stop cancels running runs and queues their jobs again (same run name: Ray Train
resumes from the latest checkpoint on the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from services.errors import Conflict
from services.hot_swap import ChampionSwitcher, HotSwap
from services.platform import Platform
from services.store.models import FineTuningJob, JobStatus
from training.jobs import store
from training.jobs.execute import (
    MAX_AUTOMATIC_RESTARTS,
    JobContext,
    RunFollower,
    follow_run,
    run_claimed_job,
    validate_job_files,
)
from training.jobs.parity import ParityEngine
from training.jobs.runners import make_runner, survives_restart
from training.jobs.states import EventType
from training.runners.base import JobRunner

log = logging.getLogger("tuneloop.jobs")

RESTART_REASON = (
    "tuneloop stopped {count} times while this job was running (the {runner} runner's runs do "
    "not outlive it), so it is not restarted again: if the job itself takes the machine down "
    "(memory), lower batch_size, max_length or TUNELOOP_TRAIN_WORKERS; then create the job "
    "again (same training file and hyperparameters)")


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_is_dead(owner: str | None) -> bool:
    """True when ``owner`` was a process on this host that no longer exists."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


class JobManager:
    """Runs fine-tuning jobs in background threads; ``start()``/``stop()`` or ``lifespan``."""

    def __init__(self, platform: Platform, *, runner: JobRunner | None = None,
                 concurrency: int = 1, poll_s: float = 1.0, stale_after_s: float = 30.0,
                 switcher: ChampionSwitcher | None = None,
                 runner_factory: Callable[[], JobRunner] | None = None,
                 parity_engine: ParityEngine | None = None) -> None:
        """``runner``: default the one ``settings.training_runner`` names (built on first job);
        ``concurrency``: jobs running at once; ``stale_after_s``: heartbeat age after which a
        running job of another process is recovered; ``switcher``: how ``auto_promote`` changes
        the champion (default: the store alone); ``parity_engine``: the serving engine a new
        version's parity check runs on (None: the check is skipped, with an event)."""
        self.platform = platform
        self._runner = runner
        self._runner_factory = runner_factory or (lambda: make_runner(platform.settings))
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.stale_after_s = stale_after_s
        self.switcher = switcher or HotSwap(platform)
        self.parity_engine = parity_engine
        self.owner = new_owner()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None

    @property
    def runner(self) -> JobRunner:
        with self._lock:
            if self._runner is None:
                self._runner = self._runner_factory()
            return self._runner

    def context(self) -> JobContext:
        return JobContext(self.platform, self.runner, self.owner, self._stopping, self.poll_s,
                          self.switcher, self.parity_engine)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Recover stale jobs, then dispatch in a background thread."""
        self.recover()
        self._dispatcher = threading.Thread(target=self._loop, name="tuneloop-jobs",
                                            daemon=True)
        self._dispatcher.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Stop dispatching; running jobs are cancelled and queued again. Closes the runner."""
        self._stopping.set()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout_s)
        for thread in list(self._threads.values()):
            thread.join(timeout_s)
        if self._runner is not None and hasattr(self._runner, "close"):
            self._runner.close()

    def wake(self) -> None:
        """Look for work now (a job was just created)."""
        self._wake.set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobManager]:
        """Started while the context is open (an app's lifespan)."""
        await asyncio.to_thread(self.start)
        try:
            yield self
        finally:
            await asyncio.to_thread(self.stop)

    # -- work --------------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Fail (local runner) or adopt (cluster runners) running jobs whose owner is gone."""
        with self.platform.store.read() as session:
            candidates = store.stale_running(session, self.owner, 0.0)
        recovered = []
        for job in candidates:
            age_ok = job.heartbeat_at is None or (
                store.now() - store.as_utc(job.heartbeat_at)).total_seconds() > self.stale_after_s
            if not (age_ok or _owner_is_dead(job.owner)):
                continue
            recovered.append(job.id)
            if job.runner in ("ray", "kuberay") and survives_restart(self.platform.settings):
                self._adopt(job)
                continue
            self._requeue_interrupted(job)
        return recovered

    def _requeue_interrupted(self, job: FineTuningJob) -> None:
        """A run lost with its process: queue the job again (resume from its latest checkpoint,
        else from the start), cancel it if that was asked, or fail it after too many restarts."""
        with self.platform.store.write() as session:
            row = store.get_job(session, None, job.id)
            if row.status != str(JobStatus.RUNNING) or row.owner != job.owner:
                return
            if row.cancel_requested:
                store.transition(session, row, JobStatus.CANCELLED, event=(
                    EventType.CANCELLED,
                    "job cancelled (tuneloop stopped while it was running; its run is gone)",
                    None))
                return
            if row.pause_requested:
                store.transition(session, row, JobStatus.PAUSED, event=(
                    EventType.PAUSED, "job paused (tuneloop stopped while it was running); "
                    "resuming continues from its latest checkpoint", None))
                return
            restarts = store.count_restarts(session, row.id)
            if restarts >= MAX_AUTOMATIC_RESTARTS:
                store.fail(session, row, "job_interrupted", RESTART_REASON.format(
                    count=restarts + 1, runner=row.runner))
                return
            checkpoints, _ = store.list_checkpoints(session, row.id, limit=1)
            step = checkpoints[0].step if checkpoints else None
            # the run may have saved later checkpoints than this process recorded before it
            # died; Ray Train resumes from the latest one in the run's storage
            where = (f"resumes from its latest checkpoint (step {step} or later)"
                     if step is not None
                     else "has no checkpoint yet, so it starts again from the beginning")
            message = ("tuneloop stopped while this job was running; the job is queued again "
                       f"and {where}")
            store.transition(session, row, JobStatus.QUEUED, event=(
                EventType.QUEUED, message, {"restart": restarts + 1, "resume_step": step}))

    def _adopt(self, job: FineTuningJob) -> None:
        with self.platform.store.write() as session:
            row = store.get_job(session, None, job.id)
            if row.status != str(JobStatus.RUNNING) or row.owner != job.owner:
                return
            row.owner, row.heartbeat_at = self.owner, store.now()
            store.add_event(session, row.id, EventType.MESSAGE,
                            "tuneloop restarted; following the run on the cluster again")
        follower = RunFollower.of(self.platform, job.id)
        self._spawn(job.id, lambda: follow_run(self.context(), job, follower))

    def _spawn(self, job_id: str, target: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                target()
            except Exception:
                log.exception("job %s crashed the job thread", job_id)
            finally:
                with self._lock:
                    self._threads.pop(job_id, None)
                self._wake.set()

        thread = threading.Thread(target=run, name=f"tuneloop-job-{job_id}", daemon=True)
        with self._lock:
            self._threads[job_id] = thread
        thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("job manager tick failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def tick(self) -> None:
        """One pass: validate new jobs, recover stale ones, start queued ones in free slots."""
        while not self._stopping.is_set():
            with self.platform.store.read() as session:
                job = store.next_job(session, JobStatus.VALIDATING_FILES)
            if job is None:
                break
            self.validate(job)
        self.recover()
        while not self._stopping.is_set() and len(self._threads) < self.concurrency:
            job = self.claim()
            if job is None:
                break

            def run(job: FineTuningJob = job) -> JobStatus:
                return run_claimed_job(self.context(), job)

            self._spawn(job.id, run)

    def validate(self, job: FineTuningJob) -> None:
        try:
            validate_job_files(self.platform, job)
        except Conflict:
            pass
        except Exception as exc:
            log.exception("validating job %s failed", job.id)
            with self.platform.store.write() as session:
                row = store.get_job(session, None, job.id)
                if row.status == str(JobStatus.VALIDATING_FILES):
                    store.fail(session, row, "validation_error",
                               f"the job's files could not be validated: {exc}")

    def claim(self, job_id: str | None = None) -> FineTuningJob | None:
        """Move the oldest queued job (or ``job_id``) to running under this owner; None if none."""
        with self.platform.store.write() as session:
            if job_id is None:
                job = store.next_job(session, JobStatus.QUEUED)
            else:
                job = store.get_job(session, None, job_id)
                if job.status != str(JobStatus.QUEUED):
                    return None
            if job is None:
                return None
            try:
                store.transition(session, job, JobStatus.RUNNING, owner=self.owner)
            except Conflict:
                return None
            return job

    def run_job(self, job_id: str) -> JobStatus:
        """Validate and run one job in this thread (the CLI); its final status. A job another
        process claimed first is not run here (returns its current status)."""
        with self.platform.store.read() as session:
            job = store.get_job(session, None, job_id)
        if job.status == str(JobStatus.VALIDATING_FILES):
            self.validate(job)
        claimed = self.claim(job_id)
        if claimed is None:
            with self.platform.store.read() as session:
                return JobStatus(store.get_job(session, None, job_id).status)
        return run_claimed_job(self.context(), claimed)
