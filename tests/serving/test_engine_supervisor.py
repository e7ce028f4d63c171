"""EngineProcess lifecycle with a fake engine command (fast, no vLLM)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from services.settings import Settings
from serving.engine_process import (
    Backoff,
    EngineProcess,
    EngineStartError,
    EngineState,
    cpu_flags,
    engine_command,
    engine_dtype,
    free_port,
)

FAKE = str(Path(__file__).parents[1] / "support" / "fake_engine.py")


def make_engine(tmp_path: Path, *flags: str, **kwargs) -> EngineProcess:
    settings = Settings(data_dir=tmp_path, base_model=str(tmp_path / "model"),
                        engine_port=free_port(), engine_start_timeout_s=20)
    return EngineProcess(
        settings, argv=[sys.executable, FAKE, str(settings.engine_port), *flags],
        backoff=Backoff(initial_s=0.05, max_s=0.2), stop_grace_s=2, **kwargs,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


async def wait_for(predicate, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def test_command_has_every_setting(tmp_path):
    settings = Settings(data_dir=tmp_path, base_model=str(tmp_path / "m"), base_model_name="base",
                        max_loras=3, max_cpu_loras=6, max_lora_rank=16, max_model_len=512,
                        engine_memory_fraction=0.2)
    argv = engine_command(settings, model_dir=tmp_path / "m", host="127.0.0.1", port=9999)
    text = " ".join(argv)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for part in ("--served-model-name base", "--port 9999", "--enable-lora", "--max-loras 3",
                 "--max-cpu-loras 6", "--max-lora-rank 16", "--max-model-len 512",
                 "--gpu-memory-utilization 0.2", "--enable-prefix-caching"):
        assert part in text
    engine = EngineProcess(settings, port=9999, kv_cache_bytes=1 << 28, block_size=32)
    assert "--kv-cache-memory-bytes 268435456" in " ".join(engine.command)
    assert "--block-size 32" in " ".join(engine.command)


def test_a_cpu_engine_runs_bfloat16_only_where_the_cpu_computes_it(tmp_path):
    native = frozenset({"avx512f", "avx512_bf16"})
    older = frozenset({"avx2", "avx512f"})  # bfloat16 only emulated: float32 is faster there
    assert engine_dtype("auto", on_cpu=True, flags=native) == "bfloat16"
    assert engine_dtype("auto", on_cpu=True, flags=frozenset({"amx_bf16"})) == "bfloat16"
    assert engine_dtype("auto", on_cpu=True, flags=older) == "float32"
    assert engine_dtype("auto", on_cpu=True, flags=frozenset()) == "float32"
    assert engine_dtype("auto", on_cpu=False, flags=older) is None  # GPUs: vLLM's choice
    assert engine_dtype("bfloat16", on_cpu=True, flags=older) == "bfloat16"  # asked for

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()

    settings = Settings(data_dir=tmp_path, base_model=str(tmp_path / "m"), engine_dtype="float32")
    argv = engine_command(settings, model_dir=tmp_path / "m", host="127.0.0.1", port=9999)
    assert argv[argv.index("--dtype") + 1] == "float32"


def test_backoff_doubles_up_to_the_cap():
    backoff = Backoff(initial_s=1, max_s=5)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


def test_crash_restarts_with_callback_and_stop_kills_the_group(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    restarts = []

    async def on_restart():
        restarts.append(engine.state)

    engine = make_engine(tmp_path, "--child", on_restart=on_restart)

    async def run():
        await engine.start()
        assert engine.state is EngineState.READY and engine.log_path.is_file()
        first = engine.pid
        await wait_for(lambda: Path("child.pid").exists())
        first_child = int(Path("child.pid").read_text())
        Path("child.pid").unlink()
        os.kill(first, signal.SIGKILL)  # the leader dies; its child lingers in the group
        await wait_for(lambda: engine.restart_count == 1 and engine.state is EngineState.READY)
        assert engine.pid != first
        assert not alive(first_child), "the crashed engine's workers were not cleaned up"
        await wait_for(lambda: Path("child.pid").exists())
        child = int(Path("child.pid").read_text())
        leader = engine.pid
        await engine.stop()
        return leader, child

    leader, child = asyncio.run(run())
    assert restarts == [EngineState.RESTARTING]  # callbacks run before READY is announced
    assert engine.state is EngineState.STOPPED
    assert not alive(leader) and not alive(child)


def test_failed_start_reports_the_log_and_leaves_nothing_running(tmp_path):
    engine = make_engine(tmp_path, "--exit-now")
    with pytest.raises(EngineStartError, match="exited with code 3") as info:
        asyncio.run(engine.start())
    assert "refusing to start" in info.value.message
    assert engine.state is EngineState.STOPPED and engine.pid is None


def test_unhealthy_engine_is_restarted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    engine = make_engine(tmp_path, health_interval_s=0.1, health_failures_to_restart=3)

    async def run():
        await engine.start()
        first = engine.pid
        Path("unhealthy").touch()
        await wait_for(lambda: engine.state is EngineState.RESTARTING)
        Path("unhealthy").unlink()
        await wait_for(lambda: engine.state is EngineState.READY)
        assert engine.pid != first and engine.restart_count == 1
        await engine.stop()

    asyncio.run(run())


def test_wait_ready_times_out_with_unavailable(tmp_path):
    from services.errors import Unavailable

    engine = make_engine(tmp_path)
    with pytest.raises(Unavailable, match="not ready"):
        asyncio.run(engine.wait_ready(timeout_s=0.1))
