"""bfloat16 vs float32 on the CPU, side by side in one run (why ``TUNELOOP_ENGINE_DTYPE=auto``
picks float32 on CPUs without native bfloat16):

- kernels: one linear layer of the default model's shape (96 tokens x 576 -> 1536, an MLP
  projection of SmolLM2-135M) in bfloat16 and float32, with oneDNN allowed this CPU's whole
  instruction set, then capped at AVX-512 without BF16 (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``) and
  at AVX2, the instruction sets of older CI machines; each in its own process;
- engine: a ``tuneloop engine`` in each dtype scoring the same classification-sized prompts
  (about 90 tokens, 1 new token, 8 in flight), requests per second, on this CPU and with
  oneDNN capped at AVX2 (vLLM's own attention kernels are not capped: the engine figures
  understate an AVX2 machine's gap).

    .venv/bin/python benchmarks/engine_dtype.py [--requests 64] [--skip-engine]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from benchmarks.engines import ENGINE_KEY, start_engine
from benchmarks.serve import DEFAULT_MODEL_DIR
from serving.engine_process import NATIVE_BF16_FLAGS, cpu_flags

CAPS = {"native": None, "AVX-512 without BF16": "AVX512_CORE", "AVX2": "AVX2"}
KERNEL = """
import time, torch
torch.set_num_threads(2)
x, w = torch.randn(96, 576), torch.randn(1536, 576)
for dtype in (torch.bfloat16, torch.float32):
    a, b = x.to(dtype), w.to(dtype)
    for _ in range(20): torch.nn.functional.linear(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(100): torch.nn.functional.linear(a, b)
        best = min(best, (time.perf_counter() - t) / 100)
    print(str(dtype).split(".")[1], best * 1e6)
"""
PROMPT = ("Classify the sentiment of this review as positive or negative. Review: The hotel was "
          "clean and the staff were friendly, but the room was small and the breakfast was cold "
          "every morning; I would still stay there again for the price. Sentiment:")


def kernels() -> dict[str, dict[str, float]]:
    out = {}
    for name, cap in CAPS.items():
        env = dict(os.environ)
        if cap:
            env["ONEDNN_MAX_CPU_ISA"] = cap
        text = subprocess.run([sys.executable, "-c", KERNEL], env=env, capture_output=True,
                              text=True, check=True).stdout
        out[name] = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()}
    return out


async def _rate(url: str, requests: int, concurrency: int = 8) -> float:
    sem = asyncio.Semaphore(concurrency)
    body = {"model": "base", "prompt": PROMPT, "max_tokens": 1, "temperature": 0,
            "logprobs": 5}

    async def one(http: httpx.AsyncClient) -> None:
        async with sem:
            (await http.post("/v1/completions", json=body)).raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=600,
                                 headers={"Authorization": f"Bearer {ENGINE_KEY}"}) as http:
        await asyncio.gather(*(one(http) for _ in range(concurrency)))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(one(http) for _ in range(requests)))
        return requests / (time.perf_counter() - started)


def engines(requests: int) -> dict[str, dict[str, float]]:
    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-dtype-"))
    out: dict[str, dict[str, float]] = {}
    for name in ("native", "AVX2"):
        out[name] = {}
        for dtype in ("bfloat16", "float32"):
            env = {**os.environ, "TUNELOOP_DATA_DIR": str(work / f"{name}-{dtype}"),
                   "TUNELOOP_BASE_MODEL": str(DEFAULT_MODEL_DIR), "TUNELOOP_BASE_MODEL_NAME": "base",
                   "TUNELOOP_ENGINE_API_KEY": ENGINE_KEY, "TUNELOOP_ENGINE_DTYPE": dtype,
                   "TUNELOOP_ENGINE_KV_CACHE_BYTES": str(256 * 1024 * 1024),
                   "TUNELOOP_LOG_LEVEL": "warning"}
            if CAPS[name]:
                env["ONEDNN_MAX_CPU_ISA"] = CAPS[name]
            proc, url = start_engine(env, None, work / f"{name}-{dtype}.log")
            try:
                out[name][dtype] = asyncio.run(_rate(url, requests))
            finally:
                os.killpg(proc.pid, 9)
                proc.wait()
            print(f"  engine, {name}, {dtype}: {out[name][dtype]:.2f} requests/s", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--skip-engine", action="store_true")
    args = parser.parse_args()
    native = sorted(cpu_flags() & NATIVE_BF16_FLAGS)
    print(f"CPU: {os.cpu_count()} cores, native bfloat16 flags: {native or 'none'}")
    print("kernel: linear 96x576 -> 1536, microseconds (lower is better)")
    for name, times in kernels().items():
        print(f"  {name:<22} bfloat16 {times['bfloat16']:8.0f}   float32 {times['float32']:8.0f}"
              f"   bfloat16 / float32 time: {times['bfloat16'] / times['float32']:.2f}x")
    if args.skip_engine:
        return
    print(f"engine: {args.requests} classification-sized requests, 8 in flight")
    for name, rates in engines(args.requests).items():
        print(f"  {name:<22} float32 / bfloat16 throughput: "
              f"{rates['float32'] / rates['bfloat16']:.2f}x")


if __name__ == "__main__":
    main()
