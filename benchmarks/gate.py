"""The promotion gate's scoring time, engine vs PEFT, side by side in one run.

The gate (``monitoring.retrain.Retrainer._gate``) calls ``evaluate`` twice, candidate then
champion, each over the held-out splits ``new`` and ``previous``. This benchmark times that pair
of calls with both evaluators on the same splits (new texts for every gate, so that the engine's
prefix cache never serves a text it scored in an earlier gate):

- engine: :class:`serving.gateway.engine_evaluator.EngineEvaluator` over a dispatcher connected
  to one real vLLM engine (:class:`serving.engine_process.EngineProcess`), with a platform that
  shares the engine's artifact store, as the monitor runs it;
- PEFT: :class:`monitoring.candidate_eval.ScoringEvaluator` in this process (it loads the base
  model and the LoRA on every ``evaluate``: that load is part of the gate's cost).

Each round's candidate is a version the engine has not loaded yet and the champion is loaded (as
when serving), so an engine gate is one cold and one warm ``evaluate``. The first gate of each
evaluator (one-time costs: the champion's first load on the engine and the engine's first fetch
of the artifact; PEFT's first read of the model files) is reported apart from the rounds, which
alternate engine / PEFT; the ratio is of the rounds' medians (goal: engine >= 5x faster). PEFT
runs on one torch thread by default (``--peft-threads``): on a busy 2-core machine two threads
were 5x slower per text, so one thread gives the conservative ratio.

The adapter is a rank-8 LoRA trained here with PEFT for a few dozen steps on generated texts of
four labels; the largest per-label probability difference between the engine
(``Classifier.classify_many`` through the pool) and PEFT (``training.scoring.score_labels``) is
measured on the same held-out texts. Results: docs/benchmarks.md.

    .venv/bin/python benchmarks/gate.py [--texts 100] [--rounds 2]
    .venv/bin/python benchmarks/gate.py --peft-threads 0   # torch's default, as the monitor
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve import DEFAULT_MODEL_DIR

T = TypeVar("T")
ENGINE_KEY = "bench-engine-key"
TENANT, ADAPTER = "bench", "topics"
LABELS = ["travel", "finance", "health", "music"]
# Sentences are subject + predicate + ending; training and held-out texts never repeat.
PARTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "travel": (
        ["Our flight to Lisbon", "The night train to Vienna", "The ferry across the bay",
         "Her road trip through Utah", "The hostel near the old harbour",
         "My connecting flight in Dubai"],
        ["was delayed by three hours", "left right on schedule", "had the best views of the trip",
         "was booked months in advance", "needed a visa we almost forgot",
         "cost less than the hotel"],
        [".", ", and the passport queue was long.", ", so we missed the tour of the old town.",
         " last spring.", ", as the travel agent had warned.", " on our honeymoon."]),
    "finance": (
        ["The quarterly earnings report", "Our mortgage rate", "The pension fund",
         "His stock portfolio", "The central bank's decision", "The small business loan"],
        ["beat every analyst forecast", "went up by half a percent", "lost value this year",
         "was rebalanced toward bonds", "surprised the bond markets",
         "was approved after a long audit"],
        [".", ", and the shares fell in early trading.", ", so the budget needs another look.",
         " last quarter.", ", as the accountant had warned.", " after the interest rate cut."]),
    "health": (
        ["The new vaccine trial", "My knee after the surgery", "The clinic's flu campaign",
         "Her blood pressure", "The hospital's emergency ward", "The physiotherapy plan"],
        ["showed fewer side effects than expected", "is healing slowly but well",
         "reached twice as many patients", "dropped after a month of exercise",
         "was short of nurses all winter", "included daily stretching"],
        [".", ", according to the doctor.", ", so the check-up was moved to May.",
         " last winter.", ", as the nurse had warned.", " after the new treatment."]),
    "music": (
        ["The orchestra's new conductor", "Their second album", "The jazz trio downtown",
         "Her piano recital", "The festival's closing band", "The choir's winter concert"],
        ["played a long Brahms symphony", "went straight to the top of the charts",
         "improvised for almost an hour", "ended with a Chopin nocturne",
         "had the whole crowd singing along", "sold out in two days"],
        [".", ", and the encore was even better.", ", so the tour got extra dates.",
         " last weekend.", ", as the critics had predicted.", " at the opera house."]),
}
TRAIN_PER_LABEL = 3


class LoopThread:
    """An asyncio loop in a daemon thread (the app's loop, as the monitor thread sees it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 1200.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def labelled_texts(per_label: int, seed: int = 0) -> list[tuple[str, str]]:
    """``per_label`` distinct sentences of each label, labels interleaved, deterministic."""
    rng = random.Random(seed)
    columns = []
    for label in LABELS:
        sentences = [f"{s} {p}{e}" for s, p, e in itertools.product(*PARTS[label])]
        if per_label > len(sentences):
            raise SystemExit(f"only {len(sentences)} distinct texts per label; ask for fewer")
        rng.shuffle(sentences)
        columns.append([(text, label) for text in sentences[:per_label]])
    return [pair for row in zip(*columns) for pair in row]


def train_classifier(base_dir: Path, out_dir: Path, examples: list[tuple[str, str]], *,
                     steps: int, lr: float = 2e-3, rank: int = 8) -> Path:
    """A LoRA (all linear layers) fitted for ``steps`` single-example steps on (text, label)
    pairs, tokenized as the recipe does (loss on the label and end of turn only)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
    from training.datasets import ClassificationExample
    from training.tokenize import tokenize_example

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    data = [tokenize_example(tokenizer, ClassificationExample(text, label),
                             template=DEFAULT_CLASSIFICATION_TEMPLATE, labels=LABELS)
            for text, label in examples]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for step in range(steps):
        example = data[step % len(data)]
        loss = model(input_ids=torch.tensor([example.input_ids]),
                     labels=torch.tensor([example.labels])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out_dir)
    return out_dir


def timed_gate(evaluator: Any, candidate: Any, champion: Any, splits: dict) -> dict[str, Any]:
    """The gate's two ``evaluate`` calls, timed; the candidate is then released (a refused one
    is; outside the timing, as in the gate)."""
    started = time.perf_counter()
    cand = evaluator.evaluate(candidate, splits)
    middle = time.perf_counter()
    champ = evaluator.evaluate(champion, splits)
    done = time.perf_counter()
    evaluator.release(candidate)
    return {"total": done - started, "candidate": middle - started, "champion": done - middle,
            "metrics": (cand, champ)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=100, help="held-out texts per split")
    parser.add_argument("--rounds", type=int, default=2, help="timed gates per evaluator")
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--model-dir", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--peft-threads", type=int, default=1,
                        help="torch threads in this process (training, PEFT scoring); 0: torch's "
                        "default, one per core, as the monitor process runs. 1 is PEFT's faster "
                        "setting on a shared 2-core machine, so the ratio is conservative")
    args = parser.parse_args()
    import torch

    if args.peft_threads:
        torch.set_num_threads(args.peft_threads)

    from monitoring.candidate_eval import ScoringEvaluator, VersionSpec
    from monitoring.metrics import Metrics
    from services.adapter_intake import register_adapter_dir
    from services.artifacts import artifact_ref
    from services.platform import Platform
    from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
    from services.settings import Settings
    from services.tenants import create_tenant
    from serving.engine_process import EngineProcess, free_port
    from serving.gateway.dispatch import Dispatcher
    from serving.gateway.engine_evaluator import EngineEvaluator
    from serving.gateway.parity_engine import GatewayEngine
    from serving.gateway.pool_access import PoolAccess
    from training import scoring

    load_before = os.getloadavg()
    # Every gate gets texts of its own: the engine's prefix cache must not serve the champion
    # texts it scored in an earlier gate (a real gate's new split is new to both versions).
    gates = args.rounds + 1
    pairs = labelled_texts(TRAIN_PER_LABEL + gates * -(-2 * args.texts // len(LABELS)))
    train = pairs[:TRAIN_PER_LABEL * len(LABELS)]
    held_out = [{"text": t, "label": label} for t, label in pairs[len(train):]]
    size = 2 * args.texts
    gate_splits = [{"new": held_out[g * size:g * size + args.texts],
                    "previous": held_out[g * size + args.texts:(g + 1) * size]}
                   for g in range(gates)]

    work = Path(tempfile.mkdtemp(prefix="tuneloop-bench-gate-"))
    loop = LoopThread()
    engine: EngineProcess | None = None
    dispatcher: Dispatcher | None = None
    platform: Platform | None = None
    try:
        started = time.perf_counter()
        adapter_dir = train_classifier(Path(args.model_dir), work / "adapter", train,
                                       steps=args.train_steps)
        print(f"trained a rank-8 LoRA on {len(train)} texts, {args.train_steps} steps, in "
              f"{time.perf_counter() - started:.0f} s", flush=True)

        engine_settings = Settings(
            data_dir=work / "engine", base_model=args.model_dir, engine_port=free_port(),
            engine_start_timeout_s=900, max_loras=4, max_cpu_loras=8, max_lora_rank=8,
            max_model_len=1024, request_timeout_s=300, engine_api_key=ENGINE_KEY)
        engine = EngineProcess(engine_settings, kv_cache_bytes=512 * 1024 * 1024)
        started = time.perf_counter()
        loop.run(engine.start())
        print(f"engine ready in {time.perf_counter() - started:.0f} s (log {engine.log_path})",
              flush=True)

        settings = Settings(
            data_dir=work / "platform", base_model=args.model_dir, engine_urls=[engine.url],
            artifacts_url=engine_settings.resolved_artifacts_url, engine_api_key=ENGINE_KEY,
            max_cpu_loras=8, request_timeout_s=300)
        platform = Platform.open(settings)
        with platform.store.write() as session:
            create_tenant(session, TENANT)
        # v1 the champion, then one fresh candidate per gate (same weights, new engine name).
        specs = []
        for _ in range(args.rounds + 2):
            row = register_adapter_dir(platform, TENANT, ADAPTER, adapter_dir,
                                       task="classification", labels=LABELS)
            specs.append(VersionSpec(TENANT, ADAPTER, row.version, row.task, row.labels,
                                     row.prompt_template, row.artifact_key))
        champion, candidates = specs[0], specs[1:]

        async def connect() -> Dispatcher:
            connected = Dispatcher(settings, platform, Metrics())
            await connected.connect(settings.engine_urls)
            return connected

        dispatcher = loop.run(connect())
        peft = ScoringEvaluator(platform)
        on_engine = EngineEvaluator(PoolAccess(dispatcher, loop.loop, wait_s=60, timeout_s=900),
                                    fallback=peft)
        assert on_engine.scorer("classification") == "engine"

        first = {}
        for name, evaluator in (("engine", on_engine), ("peft", peft)):
            first[name] = timed_gate(evaluator, candidates[0], champion, gate_splits[0])
            print(f"  first gate {name}: {first[name]['total']:.1f} s", flush=True)
        rounds: dict[str, list[dict[str, Any]]] = {"engine": [], "peft": []}
        for i in range(args.rounds):
            for name, evaluator in (("engine", on_engine), ("peft", peft)):
                rounds[name].append(timed_gate(evaluator, candidates[1 + i], champion,
                                               gate_splits[1 + i]))
                print(f"  round {i + 1} {name}: {rounds[name][-1]['total']:.1f} s", flush=True)

        # Probabilities of the champion (loaded on the engine) on the same texts, both ways.
        texts = [r["text"] for split in gate_splits[-1].values() for r in split]
        engine_probs = GatewayEngine(dispatcher, loop.loop, timeout_s=900).label_probabilities(
            champion.engine_name, artifact_ref(champion.artifact_key),
            DEFAULT_CLASSIFICATION_TEMPLATE, texts, LABELS)
        started = time.perf_counter()
        model, tokenizer = scoring.load_model(
            platform.base_model_dir, platform.artifacts.materialize_dir(champion.artifact_key))
        load_s = time.perf_counter() - started
        peft_probs = scoring.score_labels(model, tokenizer, DEFAULT_CLASSIFICATION_TEMPLATE,
                                          texts, LABELS)
        pieces = {label: tokenizer.convert_ids_to_tokens(
            tokenizer(label, add_special_tokens=False)["input_ids"]) for label in LABELS}
        del model
    finally:
        if dispatcher is not None:
            loop.run(dispatcher.close())
        if engine is not None:
            loop.run(engine.stop())
        if platform is not None:
            platform.close()
        loop.close()
        shutil.rmtree(work, ignore_errors=True)

    report(gate_splits[0], first, rounds, engine_probs, peft_probs, pieces, load_s,
           load_before, os.getloadavg())


def report(splits: dict, first: dict, rounds: dict,
           engine_probs: list[dict[str, float]], peft_probs: list[dict[str, float]],
           pieces: dict[str, list[str]], load_s: float, load_before: tuple, load_after: tuple) -> None:
    import torch

    sizes = " + ".join(f"{len(v)} {k}" for k, v in splits.items())
    print(f"\ncores: {len(os.sched_getaffinity(0))}; load average {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after; torch threads {torch.get_num_threads()}; {sizes} "
          f"held-out texts per gate (new texts every gate), {len(LABELS)} labels; a gate = "
          f"candidate + champion evaluate() over both splits")
    for label, one in (("engine (EngineEvaluator)", first["engine"]),
                       ("PEFT (ScoringEvaluator)", first["peft"])):
        print(f"first gate, {label}: {one['total']:.1f} s (candidate {one['candidate']:.1f} s, "
              f"champion {one['champion']:.1f} s)")
    medians = {}
    for name, values in rounds.items():
        medians[name] = statistics.median(v["total"] for v in values)
        parts = ", ".join(f"{v['total']:.1f} s (candidate {v['candidate']:.1f} + champion "
                          f"{v['champion']:.1f})" for v in values)
        print(f"{name} gate, {len(values)} rounds (alternating): {parts}; median "
              f"{medians[name]:.1f} s")
    print(f"PEFT model + LoRA load alone: {load_s:.1f} s (twice per PEFT gate)")
    print(f"engine vs PEFT, gate scoring: {medians['peft'] / medians['engine']:.1f}x faster "
          f"(goal >= 5x)")
    cand_e, champ_e = rounds["engine"][-1]["metrics"]
    cand_p, champ_p = rounds["peft"][-1]["metrics"]
    print(f"last round, champion's gate metrics, engine: {champ_e}\n"
          f"last round, champion's gate metrics, PEFT:   {champ_p}\n"
          f"same gate metrics from both (candidate and champion): "
          f"{cand_e == cand_p and champ_e == champ_p}")
    diffs = [(abs(e[label] - p[label]), i, label)
             for i, (e, p) in enumerate(zip(engine_probs, peft_probs)) for label in LABELS]
    worst, index, label = max(diffs)
    agree = sum(max(e, key=e.__getitem__) == max(p, key=p.__getitem__)
                for e, p in zip(engine_probs, peft_probs))
    print(f"label probabilities, engine vs PEFT on the same {len(engine_probs)} texts: largest "
          f"difference {worst:.4f} (text {index}, {label!r}: engine "
          f"{engine_probs[index][label]:.4f}, PEFT {peft_probs[index][label]:.4f}); mean "
          f"{statistics.mean(d for d, _, _ in diffs):.4f}; same top label {agree}/"
          f"{len(engine_probs)}")
    # The engine scores a label by its first token where that token is unique to it
    # (serving/classify.py); PEFT scores every token of the label and the end of turn.
    print("largest difference per label (label tokens): " + ", ".join(
        f"{label} {pieces[label]} {max(d for d, _, name in diffs if name == label):.4f}"
        for label in LABELS))


if __name__ == "__main__":
    main()
