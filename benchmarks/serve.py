"""Serving benchmark, engine level: multi-adapter throughput, cold vs warm adapters, classify cost.

Starts one vLLM engine (the same way the gateway does), creates N random rank-8 LoRA adapters
with PEFT, and measures side by side on the same engine, after warm-up:

- base only vs traffic spread over 1/8/32 distinct adapters at concurrency 1/8/32: generated
  tokens/s, p50/p99 latency, and each column's throughput as a ratio of base-only;
- cold adapter (load + first request) vs warm adapter latency;
- classification with 2 vs 8 labels (latency ratio; goal 8-label <= 1.3x 2-label).

    .venv/bin/python benchmarks/serve.py --quick           # a few minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --json out.json   # full sizes

Gateway-level measurements (gateway vs straight to engine, PEFT baseline, promote latency) are
separate sections of this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
from services.settings import Settings
from serving.classify import Classifier
from serving.engine_client import EngineClient
from serving.engine_process import EngineProcess, free_port
from serving.placement import AdapterPlacement

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / ".tuneloop/models/SmolLM2-135M-Instruct"
PROMPT = "Write a few sentences about the history of sailing ships."
LABELS_8 = ["billing", "shipping", "returns", "account", "technical", "praise", "complaint", "other"]
CLASSIFY_TEXT = "My parcel arrived two weeks late and the box was damaged."


@dataclass
class LoadResult:
    adapters: int
    concurrency: int
    requests: int
    tokens_per_s: float
    p50_s: float
    p99_s: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def make_adapters(base_dir: Path, out_dir: Path, count: int, rank: int = 8) -> list[Path]:
    """``count`` distinct random LoRA adapters (all linear layers) saved with PEFT."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules="all-linear",
                        init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    paths = []
    for i in range(count):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.normal_(0.0, 0.01)
        path = out_dir / f"adapter-{i}"
        model.save_pretrained(path)
        paths.append(path)
    return paths


async def run_load(client: EngineClient, placement: AdapterPlacement, base_name: str,
                   adapters: list[tuple[str, str]], concurrency: int, requests: int,
                   max_tokens: int) -> LoadResult:
    """``requests`` completions spread round-robin over ``adapters`` (empty: base only)."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        name, path = adapters[i % len(adapters)] if adapters else (None, None)
        body = {"model": name or base_name, "prompt": PROMPT, "max_tokens": max_tokens,
                "temperature": 0.0, "ignore_eos": True}
        async with semaphore, placement.use(name, path):
            started = time.perf_counter()
            response = await client.completions(body)
            latencies.append(time.perf_counter() - started)
        tokens += response["usage"]["completion_tokens"]

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - started
    return LoadResult(len(adapters), concurrency, requests, tokens / wall,
                      percentile(latencies, 50), percentile(latencies, 99))


async def cold_vs_warm(client: EngineClient, placement: AdapterPlacement,
                       adapters: list[tuple[str, str]], repeats: int) -> dict[str, float]:
    """Median latency of a 1-token request to a never-loaded adapter vs an already loaded one."""
    cold, warm = [], []
    for i in range(repeats):
        name, path = f"cold-{i}.{adapters[i % len(adapters)][0]}", adapters[i % len(adapters)][1]
        body = {"model": name, "prompt": PROMPT, "max_tokens": 1}
        started = time.perf_counter()
        async with placement.use(name, path):
            await client.completions(body)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        async with placement.use(name, path):
            await client.completions(body)
        warm.append(time.perf_counter() - started)
        await placement.unload(name)
    return {"cold_p50_s": statistics.median(cold), "warm_p50_s": statistics.median(warm),
            "cold_extra_s": statistics.median(cold) - statistics.median(warm)}


async def classify_cost(client: EngineClient, model: str, repeats: int) -> dict[str, float]:
    """Median latency of one classification with 2 vs 8 labels.

    Runs alternate between the two label sets (same machine noise) and every text differs, so
    neither run is served whole from the prefix cache. Label plans are cached before timing.
    """
    classifier = Classifier(client)
    label_sets = {2: LABELS_8[:2], 8: LABELS_8}
    times: dict[int, list[float]] = {2: [], 8: []}
    requests: dict[int, int] = {}
    for labels in label_sets.values():
        await classifier.plan(model, DEFAULT_CLASSIFICATION_TEMPLATE, labels)
    for i in range(repeats + 1):
        text = f"Order {i * 7919}: {CLASSIFY_TEXT}"
        for k, labels in label_sets.items():
            started = time.perf_counter()
            result = await classifier.classify(model, DEFAULT_CLASSIFICATION_TEMPLATE, text, labels)
            if i:  # the first round is warm-up
                times[k].append(time.perf_counter() - started)
            requests[k] = result.engine_requests
    result = {f"labels_{k}_p50_s": statistics.median(v) for k, v in times.items()}
    result |= {f"labels_{k}_engine_requests": float(n) for k, n in requests.items()}
    result["ratio_8_vs_2"] = result["labels_8_p50_s"] / result["labels_2_p50_s"]
    return result


def print_load_table(results: list[LoadResult], adapter_counts: list[int]) -> None:
    by_key = {(r.adapters, r.concurrency): r for r in results}
    columns = [0, *adapter_counts]
    head = "".join(f"{('base' if a == 0 else f'{a} adapters'):>28}" for a in columns)
    print(f"{'concurrency':>12}{head}")
    print(f"{'':>12}" + "".join(f"{'tok/s  p50  p99  x base':>28}" for _ in columns))
    for conc in sorted({r.concurrency for r in results}):
        base = by_key[(0, conc)].tokens_per_s
        cells = []
        for a in columns:
            r = by_key[(a, conc)]
            cells.append(f"{r.tokens_per_s:7.1f} {r.p50_s:5.2f} {r.p99_s:5.2f} {r.tokens_per_s / base:5.2f}x")
        print(f"{conc:>12}" + "".join(f"{c:>28}" for c in cells))


async def engine_benchmarks(args: argparse.Namespace) -> dict:
    settings = Settings(
        data_dir=Path(args.work_dir) / "data", base_model=args.model_dir,
        engine_port=args.engine_port or free_port(), max_loras=args.max_loras,
        max_cpu_loras=max(args.max_loras, args.max_cpu_loras), max_model_len=1024,
        engine_start_timeout_s=900,
    )
    base_dir = settings.resolved_base_model
    adapter_counts = [int(a) for a in args.adapters.split(",")]
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    print(f"creating {max(adapter_counts)} random rank-8 adapters ...", flush=True)
    paths = make_adapters(base_dir, Path(args.work_dir) / "adapters", max(adapter_counts))
    named = [(f"bench.a{i}.v1", str(p)) for i, p in enumerate(paths)]

    engine = EngineProcess(settings, kv_cache_bytes=args.kv_cache_mib * 1024 * 1024)
    print(f"starting engine: {' '.join(engine.command)}", flush=True)
    started = time.perf_counter()
    await engine.start()
    print(f"engine ready in {time.perf_counter() - started:.0f} s (log {engine.log_path})", flush=True)
    client = EngineClient(engine.url, timeout_s=900)
    placement = AdapterPlacement(client, capacity=max(len(named), 1))
    report: dict = {"settings": {"max_loras": settings.max_loras,
                                 "max_cpu_loras": settings.max_cpu_loras,
                                 "max_tokens": args.max_tokens, "quick": args.quick}}
    try:
        for name, path in named:  # warm: every adapter loaded and used once
            async with placement.use(name, path):
                await client.completions({"model": name, "prompt": PROMPT, "max_tokens": 1})
        results = []
        for conc in concurrencies:
            requests = max(args.min_requests, args.requests_per_concurrency * conc)
            for count in [0, *adapter_counts]:
                result = await run_load(client, placement, settings.resolved_base_model_name,
                                        named[:count], conc, requests, args.max_tokens)
                print(f"  adapters={count:<3} concurrency={conc:<3} {result.tokens_per_s:7.1f} tok/s "
                      f"p50 {result.p50_s:.2f} s p99 {result.p99_s:.2f} s", flush=True)
                results.append(result)
        print("\nthroughput, generated tokens/s (latency p50/p99 in s; ratio vs base-only):")
        print_load_table(results, adapter_counts)
        report["load"] = [asdict(r) for r in results]

        report["cold_vs_warm"] = await cold_vs_warm(client, placement, named, args.cold_repeats)
        cw = report["cold_vs_warm"]
        print(f"\ncold adapter p50 {cw['cold_p50_s']:.3f} s vs warm {cw['warm_p50_s']:.3f} s: "
              f"+{cw['cold_extra_s']:.3f} s (goal <= 0.5 s)")

        async with placement.use(named[0][0], named[0][1]):
            report["classify"] = await classify_cost(client, named[0][0], args.classify_repeats)
        cl = report["classify"]
        print(f"classify p50: 2 labels {cl['labels_2_p50_s'] * 1000:.1f} ms "
              f"({cl['labels_2_engine_requests']:.0f} engine request), 8 labels "
              f"{cl['labels_8_p50_s'] * 1000:.1f} ms ({cl['labels_8_engine_requests']:.0f}): "
              f"{cl['ratio_8_vs_2']:.2f}x (goal <= 1.3x)")
    finally:
        await client.aclose()
        await engine.stop()
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run sizes for a 2-core machine")
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR),
                        help="base model (Hugging Face dir); default: the imported SmolLM2")
    parser.add_argument("--adapters", default="1,8,32", help="adapter counts to spread traffic over")
    parser.add_argument("--concurrency", default="1,8,32", help="concurrency levels")
    parser.add_argument("--requests-per-concurrency", type=int, default=4,
                        help="requests per level = this x concurrency (at least --min-requests)")
    parser.add_argument("--min-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32, help="generated tokens per request")
    parser.add_argument("--max-loras", type=int, default=32, help="vLLM --max-loras for the run")
    parser.add_argument("--max-cpu-loras", type=int, default=32)
    parser.add_argument("--kv-cache-mib", type=int, default=512)
    parser.add_argument("--engine-port", type=int, default=None)
    parser.add_argument("--cold-repeats", type=int, default=5)
    parser.add_argument("--classify-repeats", type=int, default=20)
    parser.add_argument("--work-dir", default=None, help="adapters and engine log (default: tmp)")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests_per_concurrency, args.min_requests = 2, 4
        args.max_tokens, args.cold_repeats, args.classify_repeats = 16, 3, 15
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tuneloop-bench-") as tmp:
        args.work_dir = args.work_dir or tmp
        report = asyncio.run(engine_benchmarks(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"results written to {args.json}")


if __name__ == "__main__":
    main()
