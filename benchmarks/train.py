"""Training throughput, measured side by side on identical data.

1. Packing: tokens/s of the plain single-process PEFT loop with and without packing on a
   skewed-length dataset (most examples short, a few long: unpacked batches pad to the longest).
2. Ray Train overhead: the recipe's Ray Train loop (1 worker) vs the plain loop, same data,
   same config (packed), same threads. Reports the step-loop throughput and the end-to-end
   wall time.
3. Optional (--workers 2): Ray Train with 2 workers vs 1.
   ``--compare-threads`` runs only the Ray loops, side by side: 1 worker x 1 thread vs 1 worker
   x ``--threads`` threads (each worker's torch threads are the CPUs Ray gave it) and, with
   ``--workers 2``, 2 workers x 1 thread.
4. MFU: achieved model FLOP/s vs this machine's measured fp32 matmul peak.

Tokens are real (non-padding) tokens. Run from the repository root:

    .venv/bin/python benchmarks/train.py --examples 32 --threads 1

Data: short texts of tuneloop/data/vader_sentiment as classification examples, plus every
``--long-every``-th example made long by asking to repeat several texts (skew).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training.config import TrainConfig
from training.datasets import ChatExample, ClassificationExample
from training.loss import batch_loss_sum
from training.progress import read_events
from training.recipe import _build_model, _tokenize_all, _unit_rows, run_training
from training.schedule import plan_steps

DATA = REPO / "tuneloop" / "data" / "vader_sentiment" / "vader_sentiment.jsonl"
LABELS = ["negative", "neutral", "positive"]


def skewed_examples(n: int, long_every: int) -> list[dict]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    out = []
    for i in range(n):
        row = rows[(i * 37) % len(rows)]
        if long_every and i % long_every == long_every - 1:
            texts = [rows[(i * 37 + k * 11) % len(rows)]["text"] for k in range(12)]
            out.append({"messages": [
                {"role": "user", "content": "Repeat these lines:\n" + "\n".join(texts)},
                {"role": "assistant", "content": "\n".join(texts[:6])}]})
        else:
            out.append({"messages": [
                {"role": "user", "content": f"Sentiment of: {row['text']}"},
                {"role": "assistant", "content": row["label"]}]})
    return out


def tokenized(config: TrainConfig, records: list[dict]):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.base_model)
    examples = [ChatExample(r["messages"]) if "messages" in r
                else ClassificationExample(r["text"], r["label"]) for r in records]
    return _tokenize_all(tokenizer, examples, config, LABELS), tokenizer.pad_token_id


def plain_loop(config: TrainConfig, examples, pad_id: int) -> dict:
    """The same training step as the Ray worker, in this process, without Ray."""
    torch.manual_seed(config.seed)
    model = _build_model(config, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    steps = plan_steps([len(e.input_ids) for e in examples], epochs=config.epochs,
                       batch_size=config.batch_size, grad_accum=config.grad_accum,
                       packing=config.packing, max_length=config.max_length, seed=config.seed,
                       max_steps=config.max_steps)
    model.train()
    tokens, padded, began = 0, 0, time.perf_counter()
    for step, micro_batches in enumerate(steps):
        torch.manual_seed(config.seed * 1_000_003 + step * 101)
        collated = [_unit_rows(mb, examples, config.packing, pad_id, torch.float32)
                    for mb in micro_batches]
        window = sum(int((b["labels"][:, 1:] != -100).sum()) for b in collated)
        for batch, mb in zip(collated, micro_batches):
            s, _ = batch_loss_sum(model, batch)
            (s / max(window, 1)).backward()
            tokens += sum(len(examples[i].input_ids) for unit in mb for i in unit)
            padded += batch["input_ids"].numel()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - began
    return {"steps": len(steps), "tokens": tokens, "padded_tokens": padded, "seconds": elapsed,
            "tokens_per_s": tokens / elapsed, "padding_share": 1 - tokens / max(padded, 1)}


def ray_loop(config: TrainConfig) -> dict:
    began = time.perf_counter()
    run_training(config)
    wall = time.perf_counter() - began
    steps = [e for e in read_events(config.progress_file) if e["event"] == "step"]
    started = [e for e in read_events(config.progress_file) if e["event"] == "training_started"]
    loop_s = steps[-1]["time"] - started[0]["time"]
    tokens = sum(e["tokens"] for e in steps)
    return {"steps": len(steps), "tokens": tokens, "loop_seconds": loop_s,
            "tokens_per_s": tokens / loop_s, "wall_seconds": wall,
            "examples_per_s": started[0]["examples"] / loop_s,
            "torch_threads": started[0].get("torch_threads")}


def compare_threads(config, threads: int, workers: int, packed_batch: int, out: Path) -> None:
    """Ray loops only: 1 worker x 1 thread, 1 worker x ``threads``, 2 workers x 1 (if asked)."""
    import ray

    ray.init(num_cpus=max(2, threads), include_dashboard=False, log_to_driver=False)
    runs = [(1, 1), (1, threads)] + ([(2, 1)] if workers == 2 else [])
    results = {}
    try:
        for w, t in runs:
            name = f"ray_{w}_worker_x_{t}_thread"
            results[name] = ray_loop(config(
                packing=True, batch_size=packed_batch, num_workers=w, cpus_per_worker=t,
                output_dir=str(out / name), progress_file=str(out / f"{name}.jsonl")))
            print(name, json.dumps(results[name]), flush=True)
    finally:
        ray.shutdown()
    first = results["ray_1_worker_x_1_thread"]
    for name, r in results.items():
        print(f"{name}: {r['tokens_per_s']:.0f} tokens/s, {r['examples_per_s']:.2f} examples/s "
              f"({r['torch_threads']} torch threads per worker) = "
              f"{r['tokens_per_s'] / first['tokens_per_s']:.2f}x")


def matmul_peak_flops(threads: int, size: int = 1024, repeats: int = 10) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default=str(REPO / ".tuneloop/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--long-every", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="2 also measures 2 workers")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--compare-threads", action="store_true",
                        help="only the Ray loops: 1 x 1 thread vs 1 x --threads (vs 2 x 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    records = skewed_examples(args.examples, args.long_every)

    def config(**kw) -> TrainConfig:
        base = {"base_model": args.base_model, "output_dir": str(out / "x"), "task": "chat",
                "train_examples": records, "eval_fraction": 0.0, "evaluate": False, "epochs": 1,
                "batch_size": args.batch_size, "max_length": args.max_length,
                "cpus_per_worker": args.threads, "seed": 0}
        return TrainConfig(**{**base, **kw})

    examples, pad_id = tokenized(config(), records)
    lengths = sorted(len(e.input_ids) for e in examples)
    print(f"data: {len(examples)} examples, tokens min {lengths[0]} median "
          f"{lengths[len(lengths) // 2]} max {lengths[-1]}, total {sum(lengths)}")

    results: dict[str, dict] = {}
    # Packed rows hold ~max_length tokens: use fewer rows per batch for similar tokens per step.
    packed_batch = max(1, args.batch_size * lengths[len(lengths) // 2] // args.max_length)
    if args.compare_threads:
        compare_threads(config, args.threads, args.workers, packed_batch, out)
        return
    # Ray first, while this process is small: the plain loops leave its heap grown.
    if not args.skip_ray:
        import ray

        ray.init(num_cpus=max(2, args.workers * args.threads), include_dashboard=False,
                 log_to_driver=False)
        try:
            for workers in sorted({1, args.workers}):
                name = f"ray_{workers}_worker_packed"
                results[name] = ray_loop(config(
                    packing=True, batch_size=packed_batch, num_workers=workers,
                    output_dir=str(out / f"ray{workers}"),
                    progress_file=str(out / f"ray{workers}.jsonl")))
                print(name, json.dumps(results[name]), flush=True)
        finally:
            ray.shutdown()
    for name, packing, batch_size in [("plain_unpacked", False, args.batch_size),
                                      ("plain_packed", True, packed_batch)]:
        results[name] = plain_loop(config(packing=packing, batch_size=batch_size), examples,
                                   pad_id)
        print(name, json.dumps(results[name]), flush=True)
        gc.collect()

    # MFU of a run = its model FLOP/s over the matmul peak of as many threads as it used
    # (2 workers x 1 thread: the 2-thread peak, i.e. the whole 2-core machine).
    peaks = {t: matmul_peak_flops(t) for t in sorted({args.threads, args.workers * args.threads})}
    # SmolLM2-135M without its (tied) embedding: the LM head runs only on target positions
    # (training.loss), so it is left out. Forward 2N + activation-gradient backward 2N per token
    # (frozen base: no weight gradients); attention scores and LoRA's small matmuls not counted.
    params = 134_515_008 - 49_152 * 576
    flops_per_token = 4 * params
    for name, r in results.items():
        r["threads"] = args.threads * (args.workers if name == "ray_2_worker_packed" else 1)
        r["model_flops_per_s"] = r["tokens_per_s"] * flops_per_token
        r["mfu"] = r["model_flops_per_s"] / peaks[r["threads"]]
    print(json.dumps({"peak_matmul_flops_per_s": peaks, "threads": args.threads,
                      "results": results}, indent=2))
    unpacked, packed = results["plain_unpacked"], results["plain_packed"]
    print(f"\npacking speed-up (tokens/s packed / unpacked): "
          f"{packed['tokens_per_s'] / unpacked['tokens_per_s']:.2f}x "
          f"(padding share unpacked {unpacked['padding_share']:.0%}, "
          f"packed {packed['padding_share']:.0%})")
    if "ray_1_worker_packed" in results:
        ray1 = results["ray_1_worker_packed"]
        print(f"Ray Train 1 worker vs plain loop (both packed), step-loop tokens/s: "
              f"{ray1['tokens_per_s'] / packed['tokens_per_s']:.2f}x "
              f"(overhead {1 - ray1['tokens_per_s'] / packed['tokens_per_s']:.0%}); "
              f"wall incl. Ray start and model load: {ray1['wall_seconds']:.0f}s vs loop "
              f"{packed['seconds']:.0f}s")
    if "ray_2_worker_packed" in results:
        ray1, ray2 = results["ray_1_worker_packed"], results["ray_2_worker_packed"]
        print(f"Ray Train 2 workers vs 1 (step-loop tokens/s): {ray2['tokens_per_s']:.0f} vs "
              f"{ray1['tokens_per_s']:.0f} = {ray2['tokens_per_s'] / ray1['tokens_per_s']:.2f}x; "
              f"wall {ray2['wall_seconds']:.0f}s vs {ray1['wall_seconds']:.0f}s")
    for name, r in results.items():
        print(f"MFU {name}: {r['mfu']:.1%} of the measured {r['threads']}-thread matmul peak "
              f"{peaks[r['threads']] / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
