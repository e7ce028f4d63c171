"""Serving benchmark, gateway level, side by side in one run on one engine:

- overhead: the same request straight to the engine vs through the gateway (sequential,
  interleaved, 1 generated token, base model), p50/p99 and the difference; goal <= 2 ms p50,
  <= 10 ms p99. The gateway runs as ``tuneloop serve`` in its own process, as deployed;
- naive baseline: transformers + PEFT in one process serving a mixed-adapter load (batch 1,
  switching adapters per request) vs the gateway + vLLM with the same adapters at concurrency 8:
  generated tokens/s and the ratio (goal >= 10x);
- hot swap: 50 promotes alternating two versions under 4 concurrent clients: time from the
  promote call to the first response naming the new version, and failed requests (goal 0).

    .venv/bin/python benchmarks/gateway.py [--swaps 50] [--baseline-requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx

from benchmarks.serve import DEFAULT_MODEL_DIR, PROMPT, make_adapters, percentile
from services.settings import Settings
from serving.engine_process import EngineProcess, free_port

MAX_TOKENS = 16


def start_gateway(settings: Settings, adapters: list[Path]) -> tuple[subprocess.Popen, str]:
    """Register the tenant and adapters, then run ``tuneloop serve --no-monitor`` in its own
    process, as deployed (a gateway thread inside this process would share the GIL with the
    measuring client and add GIL hand-off delays to every request)."""
    from services.adapter_intake import register_adapter_dir
    from services.platform import Platform
    from services.tenants import create_key, create_tenant

    platform = Platform.open(settings)
    with platform.store.write() as s:
        create_tenant(s, "bench")
        key = create_key(s, "bench").key
    for i, path in enumerate(adapters):
        register_adapter_dir(platform, "bench", f"a{i}", path)
    register_adapter_dir(platform, "bench", "a0", adapters[1])  # a0@v2 for the swap test
    platform.close()
    env = {**os.environ, **{f"TUNELOOP_{name.upper()}": _env_value(getattr(settings, name))
                            for name in settings.model_fields_set}}
    proc = subprocess.Popen([sys.executable, "-c", "from tuneloop.cli.main import main; main()",
                             "serve", "--no-monitor"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{settings.port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return proc, key
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the gateway did not become ready (exit code {proc.poll()})")
        time.sleep(0.2)


def _env_value(value: object) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def overhead(engine_url: str, gateway_url: str, key: str, model: str, n: int) -> dict:
    body = {"model": model, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "user", "content": "Hi"}]}
    direct, via = [], []
    with httpx.Client(timeout=60) as http:
        for _ in range(5):  # warm both paths
            http.post(f"{engine_url}/v1/chat/completions", json=body)
            http.post(f"{gateway_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
        for _ in range(n):  # interleaved so both see the same machine noise
            t = time.perf_counter()
            http.post(f"{engine_url}/v1/chat/completions", json=body).raise_for_status()
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            http.post(f"{gateway_url}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}).raise_for_status()
            via.append(time.perf_counter() - t)
    return {"direct_p50_ms": statistics.median(direct) * 1e3, "gateway_p50_ms": statistics.median(via) * 1e3,
            "direct_p99_ms": percentile(direct, 99) * 1e3, "gateway_p99_ms": percentile(via, 99) * 1e3}


async def gateway_throughput(url: str, key: str, adapters: int, requests: int, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        async with sem:
            r = await http.post("/v1/chat/completions", json={
                "model": f"a{i % adapters}", "max_tokens": MAX_TOKENS, "temperature": 0,
                "ignore_eos": True, "messages": [{"role": "user", "content": PROMPT}]})
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=url, timeout=300, headers={"Authorization": f"Bearer {key}"}) as http:
        await asyncio.gather(*(one(i, http) for i in range(adapters)))  # load every adapter
        started = time.perf_counter()
        await asyncio.gather(*(one(i, http) for i in range(requests)))
        return tokens_rate(tokens, started, adapters)


def tokens_rate(tokens: int, started: float, warmup_requests: int) -> float:
    # Only the timed requests' tokens: the warm-up issued `warmup_requests` of MAX_TOKENS each.
    return (tokens - warmup_requests * MAX_TOKENS) / (time.perf_counter() - started)


def peft_baseline(base_dir: Path, adapters: list[Path], requests: int) -> float:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    model = AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name="a0")
    for i, path in enumerate(adapters[1:], start=1):
        model.load_adapter(str(path), adapter_name=f"a{i}")
    ids = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    tokens = 0
    started = time.perf_counter()
    with torch.no_grad():
        for i in range(requests):
            model.set_adapter(f"a{i % len(adapters)}")
            out = model.generate(**ids, max_new_tokens=MAX_TOKENS, min_new_tokens=MAX_TOKENS, do_sample=False)
            tokens += out.shape[1] - ids["input_ids"].shape[1]
    return tokens / (time.perf_counter() - started)


def hot_swap(url: str, key: str, swaps: int) -> dict:
    """Promote a0 back and forth under 4 clients; per swap: the promote call, then requests
    until one answers from the new version. Also the clients' own request latency, to tell
    the swap's cost from a request's under the same load."""
    stop = threading.Event()
    failures: list[str] = []
    load_latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "a0", "max_tokens": 2, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}

    def load() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
            while not stop.is_set():
                t = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                load_latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:120]}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    latencies, promote_calls, first_requests = [], [], []
    with httpx.Client(base_url=url, timeout=120, headers=headers) as http:
        for i in range(swaps):
            version = 2 if i % 2 == 0 else 1
            started = time.perf_counter()
            r = http.post("/v1/adapters/a0/promote", json={"version": version})
            promote_calls.append(time.perf_counter() - started)
            if r.status_code != 200:
                failures.append(f"promote {r.status_code}")
                continue
            while True:
                sent = time.perf_counter()
                r = http.post("/v1/chat/completions", json=body)
                if r.status_code == 200 and r.json()["model"] == f"a0@v{version}":
                    latencies.append(time.perf_counter() - started)
                    first_requests.append(time.perf_counter() - sent)
                    break
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:120]}")
    stop.set()
    for t in threads:
        t.join()
    return {"swaps": len(latencies), "p50_s": statistics.median(latencies),
            "p90_s": percentile(latencies, 90), "max_s": max(latencies),
            "promote_call_p50_s": statistics.median(promote_calls),
            "promote_call_max_s": max(promote_calls),
            "first_request_p50_s": statistics.median(first_requests),
            "load_request_p50_s": statistics.median(load_latencies),
            "failed_requests": len(failures), "examples": failures[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--overhead-requests", type=int, default=100)
    parser.add_argument("--baseline-requests", type=int, default=16)
    parser.add_argument("--vllm-requests", type=int, default=64)
    parser.add_argument("--swaps", type=int, default=50)
    parser.add_argument("--skip-baseline", action="store_true", help="skip transformers + PEFT")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        adapters = make_adapters(args.model_dir, tmp / "adapters", args.adapters)
        settings = Settings(data_dir=tmp / "data", base_model=str(args.model_dir), admin_key="bench",
                            engine_port=free_port(), port=free_port(), engine_start_timeout_s=900,
                            tenant_rate_per_s=10_000, tenant_max_concurrency=1000, max_loras=8,
                            max_cpu_loras=16)
        engine = EngineProcess(settings)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(engine.start())
        settings = Settings(**{name: getattr(settings, name) for name in settings.model_fields_set},
                            engine_urls=[engine.url], log_level="warning")
        gateway, key = start_gateway(settings, adapters)
        url = f"http://127.0.0.1:{settings.port}"
        try:
            base = settings.resolved_base_model_name
            o = overhead(engine.url, url, key, base, args.overhead_requests)
            print(f"overhead ({args.overhead_requests} interleaved requests, 1 token): engine p50 "
                  f"{o['direct_p50_ms']:.1f} ms, gateway p50 {o['gateway_p50_ms']:.1f} ms "
                  f"(+{o['gateway_p50_ms'] - o['direct_p50_ms']:.1f} ms); p99 {o['direct_p99_ms']:.1f} vs "
                  f"{o['gateway_p99_ms']:.1f} ms (+{o['gateway_p99_ms'] - o['direct_p99_ms']:.1f} ms)")
            vllm_tps = asyncio.run(gateway_throughput(url, key, args.adapters, args.vllm_requests, 8))
            s = hot_swap(url, key, args.swaps)
            print(f"hot swap: {s['swaps']} promotes under 4 clients, promote -> first response from the "
                  f"new version p50 {s['p50_s']:.2f} s, p90 {s['p90_s']:.2f} s, max {s['max_s']:.2f} s "
                  f"(the promote call p50 {s['promote_call_p50_s']:.2f} s, max {s['promote_call_max_s']:.2f} s; "
                  f"the first request from the new version p50 {s['first_request_p50_s']:.2f} s; any request "
                  f"under this load p50 {s['load_request_p50_s']:.2f} s); failed requests "
                  f"{s['failed_requests']} {s['examples']}")
        finally:
            gateway.terminate()
            gateway.wait(30)
            loop.run_until_complete(engine.stop())
        if args.skip_baseline:
            return
        # The baseline runs after the engine stopped: its CPU threads would otherwise compete.
        peft_tps = peft_baseline(args.model_dir, adapters, args.baseline_requests)
        print(f"mixed load over {args.adapters} adapters, {MAX_TOKENS} tokens/request: gateway+vLLM "
              f"(concurrency 8) {vllm_tps:.0f} tok/s vs transformers+PEFT (batch 1) {peft_tps:.0f} "
              f"tok/s -> {vllm_tps / peft_tps:.1f}x")


if __name__ == "__main__":
    main()
