"""Simulated machines for multi-host tests: each ``Host`` is one mount namespace.

A host has its own tmpfs on ``/tmp`` and ``/dev/shm``, its own ``HOME`` (``/tmp/home``) and data
dir (``TUNELOOP_DATA_DIR=/tmp/data``), and sees the checkout (with its ``.venv``) read-only, so
no host can read another host's files and nothing can write into the project. Shared between
hosts (and the test) are only the network (127.0.0.1) and the rest of the root filesystem, which
tuneloop processes must not rely on.

Every process started on a host joins the same namespace (``nsenter`` into a keeper process
made by ``unshare --mount --propagation private --fork``), so ``host.run(["cat", ...])`` sees
what ``host.start(...)`` wrote. Needs root; fails loudly otherwise.

    with Host("engine-1", tmp_path, REPO_ROOT, {"TUNELOOP_ENGINE_API_KEY": "k"}) as host:
        proc = host.start(["tuneloop", "engine", "--port", str(port)], log_name="engine")
        proc.wait_http(f"http://127.0.0.1:{port}/health", timeout_s=120)
        proc.kill(signal.SIGKILL)  # the whole process group
    # leaving the block stops every process on the host, however it was started
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

HOME = "/tmp/home"
"""``HOME`` inside every host."""
DATA_DIR = "/tmp/data"
"""``TUNELOOP_DATA_DIR`` inside every host (unless the env overrides it)."""

# $1...: directories to make read-only. stdin is a pipe the test process holds open: EOF means
# it died without closing the host, and the keeper then kills everything left in the namespace.
# `cd /` after the mounts: a cwd taken from before the bind mount would still be writable.
_KEEPER = r"""
set -e
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
for dir in "$@"; do
  mount --bind "$dir" "$dir"
  mount -o remount,bind,ro "$dir"
done
mkdir -p /tmp/home /tmp/data
cd /
echo "$$"
exec >/dev/null
set +e
read -r _
me=$(readlink /proc/$$/ns/mnt)
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  if [ "$pid" != "$$" ] && [ "$pid" != "$PPID" ] && [ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$me" ]; then
    kill -9 "$pid" 2>/dev/null
  fi
done
"""

# nsenter resets the cwd to / (a cwd chosen before entering would bypass the read-only mount).
_SHIM = 'cd "$0" && exec "$@"'


class HostError(RuntimeError):
    """A host could not be set up, or a process on it failed; the message has the log tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


class HostProcess:
    """A process tree started by ``Host.start``: its own process group, output in ``log_path``."""

    def __init__(self, host: Host, argv: Sequence[str], popen: subprocess.Popen, log_path: Path) -> None:
        self.host = host
        self.argv = list(argv)
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code, or None while the group leader runs."""
        return self.popen.poll()

    def wait(self, timeout_s: float) -> int:
        """Waits for the group leader; raises ``subprocess.TimeoutExpired``."""
        return self.popen.wait(timeout=timeout_s)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to the whole process group (no error if it is gone)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM to the group, SIGKILL to what is left after ``timeout_s``; the exit code."""
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill(signal.SIGKILL)  # also children that outlive a leader which exited on TERM
        return self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def wait_http(self, url: str, timeout_s: float, headers: Mapping[str, str] | None = None) -> None:
        """Polls ``url`` until it answers 200; raises ``HostError`` with the log tail if the
        process exits first or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while True:
            code = self.popen.poll()
            if code is not None:
                raise HostError(
                    f"{self.host.name}: {self.argv[0]} exited with {code} before {url} answered; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                req = urllib.request.Request(url, headers=dict(headers or {}))
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise HostError(
                    f"{self.host.name}: {url} did not answer 200 within {timeout_s} s ({last}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def __repr__(self) -> str:
        return f"HostProcess({self.host.name!r}, pid={self.pid}, argv={self.argv!r})"


class Host:
    """One simulated machine. ``root``: where its logs go (``root/<name>/``, outside the host).
    ``checkout``: the project, read-only inside (plus ``read_only`` extra dirs). ``env``: the
    environment of every process on it, over a minimal base (PATH with the checkout's
    ``.venv/bin``, HOME, TMPDIR, TUNELOOP_DATA_DIR, PYTHONDONTWRITEBYTECODE, PYTHONUNBUFFERED);
    nothing is inherited from the test process."""

    def __init__(
        self,
        name: str,
        root: Path,
        checkout: Path,
        env: Mapping[str, str] | None = None,
        *,
        read_only: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.checkout = Path(checkout).resolve()
        self.log_dir = Path(root) / name
        self.env = dict(env or {})
        self.read_only = [self.checkout, *(Path(p).resolve() for p in read_only)]
        self.processes: list[HostProcess] = []
        self._keeper: subprocess.Popen | None = None
        self._keeper_pid = 0
        self._log_count = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> Host:
        """Creates the namespace (idempotent; ``start`` and ``run`` call it)."""
        if self._keeper is not None:
            return self
        self._check_machine()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / "host.log"
        with open(log, "ab") as err:
            self._keeper = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--fork", "--kill-child",
                 "sh", "-c", _KEEPER, "keeper", *map(str, self.read_only)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                start_new_session=True, cwd="/", env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        assert self._keeper.stdout is not None
        ready, _, _ = select.select([self._keeper.stdout], [], [], 20)
        line = self._keeper.stdout.readline().strip() if ready else b""
        self._keeper.stdout.close()
        if not line.isdigit():
            assert self._keeper.stdin is not None
            self._keeper.stdin.close()
            self._keeper.kill()
            self._keeper.wait()
            self._keeper = None
            raise HostError(f"{self.name}: setting up the mount namespace failed; {log}:\n{_tail(log, 20)}")
        self._keeper_pid = int(line)
        return self

    def close(self) -> None:
        """Stops every process started here (SIGTERM, then SIGKILL), then anything else still in
        the namespace, then the namespace itself; its /tmp is gone afterwards."""
        if self._keeper is None:
            return
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.stop(timeout_s=5)
        self.kill_all()
        assert self._keeper.stdin is not None
        self._keeper.stdin.close()  # the keeper sweeps the namespace once more and exits
        try:
            self._keeper.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._keeper.kill()
            self._keeper.wait()
        self._keeper = None

    def __enter__(self) -> Host:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes ---------------------------------------------------------------------------

    def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_name: str | None = None,
        cwd: str | None = None,
    ) -> HostProcess:
        """Starts ``argv`` on this host in its own process group, stdout and stderr appended to
        ``root/<name>/<log_name>.log`` (default: program name and a counter). ``env`` is laid
        over the host's env; ``cwd`` is a path inside the host (default: the checkout)."""
        self.open()
        if log_name is None:
            self._log_count += 1
            log_name = f"{Path(argv[0]).name}-{self._log_count}"
        log_path = self.log_dir / f"{log_name}.log"
        with open(log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                self._command(argv, cwd), env=self._env(env), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
            )
        proc = HostProcess(self, argv, popen, log_path)
        self.processes.append(proc)
        return proc

    def run(
        self,
        argv: Sequence[str],
        timeout_s: float = 60,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Runs a one-shot command on this host; stdout and stderr are captured as text. On
        timeout its process group is killed and ``subprocess.TimeoutExpired`` raised; with
        ``check`` a non-zero exit raises ``HostError`` with the output."""
        self.open()
        popen = subprocess.Popen(
            self._command(argv, cwd), env=self._env(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True, cwd="/",
        )
        try:
            out, err = popen.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.communicate()
            raise
        done = subprocess.CompletedProcess(list(argv), popen.returncode, out, err)
        if check and done.returncode != 0:
            raise HostError(
                f"{self.name}: {list(argv)} exited with {done.returncode}\n"
                f"stdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
            )
        return done

    def pids(self) -> list[int]:
        """Every live process in this host's namespace (the namespace's own keeper excluded)."""
        if self._keeper is None:
            return []
        try:
            ns = os.readlink(f"/proc/{self._keeper_pid}/ns/mnt")
        except OSError:
            return []
        skip = {self._keeper_pid, self._keeper.pid}
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) in skip:
                continue
            try:
                if os.readlink(f"/proc/{entry.name}/ns/mnt") == ns:  # zombies have no ns: skipped
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    def kill_all(self, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
        """Sends ``sig`` to every process in the namespace, also ones that left their process
        group (what a machine crash does); the host stays usable and keeps its /tmp."""
        deadline = time.monotonic() + timeout_s
        while pids := self.pids():
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            for proc in self.processes:
                proc.poll()  # reap our own children so they leave /proc
            if sig != signal.SIGKILL or time.monotonic() > deadline:
                break
            time.sleep(0.05)

    # -- internals ---------------------------------------------------------------------------

    def _command(self, argv: Sequence[str], cwd: str | None) -> list[str]:
        if not argv:
            raise ValueError("argv is empty: give the program to run on the host")
        return ["nsenter", f"--target={self._keeper_pid}", "--mount", "--",
                "sh", "-c", _SHIM, cwd or str(self.checkout), *argv]

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        venv_bin = self.checkout / ".venv" / "bin"
        bindir = venv_bin if venv_bin.is_dir() else Path(sys.executable).parent
        env = {
            "PATH": f"{bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": HOME,
            "TMPDIR": "/tmp",
            "TUNELOOP_DATA_DIR": DATA_DIR,
            "PYTHONDONTWRITEBYTECODE": "1",  # the checkout and its .venv are read-only
            "PYTHONUNBUFFERED": "1",  # logs are read while the process runs
        }
        env.update(self.env)
        env.update(extra or {})
        return env

    def _check_machine(self) -> None:
        if os.geteuid() != 0:
            raise HostError(
                "multi-host tests need root (mount namespaces and tmpfs mounts); "
                "run pytest as root, as CI does"
            )
        missing = [tool for tool in ("unshare", "nsenter") if shutil.which(tool) is None]
        if missing:
            raise HostError(f"{', '.join(missing)} not found: install util-linux (apt-get install util-linux)")
        for private in ("/tmp", "/dev/shm"):
            for path in self.read_only:
                if path.is_relative_to(private):
                    raise HostError(
                        f"{path} is under {private}, which every host replaces with its own "
                        "tmpfs: keep the checkout (and read_only dirs) elsewhere"
                    )

    def __repr__(self) -> str:
        return f"Host({self.name!r}, keeper={self._keeper_pid or None})"
