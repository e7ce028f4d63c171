"""Many engines, side by side in one run:

- scale-out: generated tokens/s of the base model through one gateway over two ``tuneloop
  engine`` processes vs over one, at the same concurrency (default 32), in alternating rounds so
  both see the same machine noise; the ratio (goal >= 1.6x where the cores allow it). Each engine
  gets its own CPU for its OpenMP threads (``VLLM_CPU_OMP_THREADS_BIND``) when there are two;
- cold vs warm adapter path: the first request for an adapter version an engine never saw (the
  engine fetches it from the artifact store by content key, verifies it, loads it, then the first
  token) vs the next request for it, time to a 1-token reply, median over several versions.

    .venv/bin/python benchmarks/engines.py [--concurrency 32] [--requests 96] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from benchmarks.serve import DEFAULT_MODEL_DIR, PROMPT, make_adapters
from serving.engine_process import free_port

MAX_TOKENS = 16
ENGINE_KEY = "bench-engine-key"


def _wait(url: str, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{what} did not become ready (exit code {proc.poll()})")
        time.sleep(0.5)


def _tuneloop(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from tuneloop.cli.main import main; main()",
                             *args], cwd=ROOT, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def start_engine(env: dict[str, str], core: int | None, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    engine_env = dict(env)
    if core is not None:
        engine_env["VLLM_CPU_OMP_THREADS_BIND"] = str(core)
    proc = _tuneloop(["engine", "--port", str(port)], engine_env, log)
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/health", proc, 900, f"engine on port {port}")
    return proc, url


def start_gateway(env: dict[str, str], engines: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = _tuneloop(["serve", "--no-monitor", "--port", str(port)],
                     {**env, "TUNELOOP_ENGINE_URLS": ",".join(engines)}, log)
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/readyz", proc, 300, f"gateway over {len(engines)} engine(s)")
    return proc, url


async def throughput(url: str, key: str, requests: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        async with sem:
            r = await http.post("/v1/chat/completions", json={
                "model": "base", "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True,
                "messages": [{"role": "user", "content": PROMPT}]})
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        await asyncio.gather(*(one(http) for _ in range(concurrency)))  # warm every engine
        tokens = 0
        started = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(requests)))
        return tokens / (time.perf_counter() - started)


def first_reply_s(url: str, key: str, model: str) -> float:
    body = {"model": model, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    started = time.perf_counter()
    httpx.post(f"{url}/v1/chat/completions", json=body, timeout=600,
               headers={"Authorization": f"Bearer {key}"}).raise_for_status()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold-versions", type=int, default=4)
    args = parser.parse_args()

    from services.adapter_intake import register_adapter_dir
    from services.platform import Platform
    from services.settings import Settings
    from services.tenants import create_key, create_tenant

    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-engines-"))
    env = {**os.environ, "TUNELOOP_DATA_DIR": str(work / "data"),
           "TUNELOOP_BASE_MODEL": str(DEFAULT_MODEL_DIR), "TUNELOOP_BASE_MODEL_NAME": "base",
           "TUNELOOP_ADMIN_KEY": "bench-admin", "TUNELOOP_ENGINE_API_KEY": ENGINE_KEY,
           "TUNELOOP_ENGINE_KV_CACHE_BYTES": str(512 * 1024 * 1024),
           "TUNELOOP_TENANT_RATE_PER_S": "100000", "TUNELOOP_TRAIN_CONCURRENCY": "0",
           "TUNELOOP_LOG_LEVEL": "warning"}
    platform = Platform.open(Settings(data_dir=work / "data", base_model=str(DEFAULT_MODEL_DIR),
                                      base_model_name="base", admin_key="bench-admin"))
    with platform.store.write() as session:
        create_tenant(session, "bench")
        key = create_key(session, "bench").key
    adapters = make_adapters(DEFAULT_MODEL_DIR, work / "adapters", args.cold_versions)
    for i, path in enumerate(adapters):
        register_adapter_dir(platform, "bench", f"cold{i}", path)
    platform.close()

    cores = len(os.sched_getaffinity(0))
    procs: list[subprocess.Popen] = []
    try:
        e1, u1 = start_engine(env, 0 if cores >= 2 else None, work / "engine-1.log")
        e2, u2 = start_engine(env, 1 if cores >= 2 else None, work / "engine-2.log")
        procs += [e1, e2]
        g1, one = start_gateway(env, [u1], work / "gateway-1.log")
        g2, two = start_gateway(env, [u1, u2], work / "gateway-2.log")
        procs += [g1, g2]
        rates: dict[str, list[float]] = {"one engine": [], "two engines": []}
        for _ in range(args.rounds):
            rates["one engine"].append(asyncio.run(throughput(one, key, args.requests, args.concurrency)))
            rates["two engines"].append(asyncio.run(throughput(two, key, args.requests, args.concurrency)))
        cold = [first_reply_s(two, key, f"cold{i}") for i in range(args.cold_versions)]
        warm = [first_reply_s(two, key, f"cold{i}") for i in range(args.cold_versions)]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    single, double = statistics.median(rates["one engine"]), statistics.median(rates["two engines"])
    print(f"cores: {cores}; concurrency {args.concurrency}, {args.requests} requests x "
          f"{MAX_TOKENS} tokens per round, {args.rounds} rounds (alternating)")
    for name, values in rates.items():
        print(f"  {name}: " + ", ".join(f"{v:.1f}" for v in values) + " tokens/s")
    print(f"two engines / one engine: {double / single:.2f}x (goal >= 1.6x where cores allow)")
    print(f"adapter version never seen by the engine (fetch + verify + load + first token): "
          f"median {statistics.median(cold) * 1e3:.0f} ms; warm: median "
          f"{statistics.median(warm) * 1e3:.0f} ms; cold / warm "
          f"{statistics.median(cold) / statistics.median(warm):.1f}x")


if __name__ == "__main__":
    main()
