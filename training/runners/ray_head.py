"""The local Ray head tuneloop starts for the ``local`` runner, as its own process tree.

Why a separate process and not ``ray.init()`` in tuneloop: a Ray started inside the server is
tied to whichever thread started it (the job manager's worker thread: no signal handlers), turns
the server into a process-group leader (Ctrl-C no longer reaches it), and enables Ray's token
auth by editing the server's own environment after the drivers' environment was already built,
so training subprocesses could not join it. Here the head is ``ray start --head --block`` on
ports and a temp dir of its own, with token auth on and a token file only tuneloop's drivers get
(:meth:`LocalRayHead.driver_env`).

Lifecycle: ``python -m training.runners.ray_head`` is a small supervisor that runs ``ray start
--block`` in its own session and stops it when its stdin closes. tuneloop holds the write end of
that pipe, so the head goes away on :meth:`LocalRayHead.stop` and also when tuneloop itself dies
(even by SIGKILL): no orphaned raylets.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ADDRESS_FILE = "ray_current_cluster"  # written by `ray start` once the head node is up
TOKEN_FILE = "auth_token"


class RayHeadError(RuntimeError):
    """The local Ray head did not start; the message says why and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_start_command(port: int, temp_dir: Path, num_cpus: int | None) -> list[str]:
    """``ray start --head --block`` on 127.0.0.1 with every listening port chosen here, so two
    heads on one machine (tests, a second tuneloop) never collide on Ray's fixed defaults."""
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--temp-dir", str(temp_dir),
        "--include-dashboard", "false", "--disable-usage-stats",
        "--dashboard-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
    ]
    if num_cpus is not None:
        command += ["--num-cpus", str(num_cpus)]
    return command


class LocalRayHead:
    """One Ray head process tree owned by this tuneloop process."""

    def __init__(self, num_cpus: int | None = None, start_timeout_s: float = 120.0) -> None:
        self.num_cpus = num_cpus
        self.start_timeout_s = start_timeout_s
        self.address: str | None = None
        self.temp_dir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def token_path(self) -> Path:
        assert self.temp_dir is not None
        return self.temp_dir / TOKEN_FILE

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the head and wait until it accepts drivers; returns its GCS address."""
        if self.alive():
            assert self.address is not None
            return self.address
        self.stop()
        # Short path: Ray's unix sockets live under it and must stay under ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="tlray-"))
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        port = free_port()
        log_path = self.temp_dir / "head.log"
        with open(log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "training.runners.ray_head", "--",
                 *ray_start_command(port, self.temp_dir, self.num_cpus)],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                env=self._head_env(), start_new_session=True)
        address_file = self.temp_dir / ADDRESS_FILE
        deadline = time.monotonic() + self.start_timeout_s
        while not address_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                self.stop()
                raise RayHeadError(
                    f"the local Ray head did not start within {self.start_timeout_s:.0f} s "
                    f"(exit code {self._process.returncode if self._process else None}); "
                    f"set TUNELOOP_RAY_ADDRESS to use a running Ray instead. Log:\n{tail}")
            time.sleep(0.2)
        self.address = f"127.0.0.1:{port}"
        return self.address

    def _head_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def driver_env(self) -> dict[str, str]:
        """What a driver subprocess needs to join this head (address and auth token)."""
        if self.address is None:
            raise RayHeadError("the local Ray head is not started")
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(self.token_path)}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the head (closing the supervisor's stdin) and remove its temp dir."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                assert process.stdin is not None  # started with stdin=PIPE
                process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir, self.address = None, None


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------------- the supervisor


def supervise(command: list[str], grace_s: float = 20.0) -> int:
    """Run ``command`` (``ray start --block``) in its own session until our stdin closes (the
    parent stopped or died) or it exits; then stop its whole process group."""
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
    done = threading.Event()

    def wait_stdin() -> None:
        try:
            while sys.stdin.buffer.read(1):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(0.5):
        if child.poll() is not None:
            return child.returncode
    # SIGTERM to `ray start --block` runs its shutdown hook, which stops gcs, raylet, workers.
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _killpg(child.pid, signal.SIGKILL)  # anything left in the head's session
    if child.poll() is None:
        child.wait()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    sys.exit(supervise(args))
