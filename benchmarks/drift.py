"""Calibration and speed of the input drift test on real text (tests/data/drift: 4 domains).

Prints, for the default test (linear MMD on TF-IDF, 500 permutations, threshold 0.01):
- false-alarm rate on stationary data (one domain split in two at random);
- detection rate on a full topic shift (reference from one domain, window from another) and on
  partial shifts (a share of the window from another domain);
- wall time of one test on 10,000 texts (5,000 vs 5,000 and 9,800 vs 200), median of runs.

Usage: python benchmarks/drift.py [--trials 200] [--reference 1000] [--window 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monitoring.drift import DEFAULT_THRESHOLD, input_drift
from monitoring.quality import wilson_interval

DATA = ROOT / "tests" / "data" / "drift" / "vader_domains.jsonl"


def load() -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    with DATA.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            grouped.setdefault(row["domain"], []).append(row["text"])
    return grouped


def rate(hits: int, n: int) -> str:
    low, high = wilson_interval(hits, n)
    return f"{hits / n:6.1%}  ({hits}/{n}, 95% CI {low:.1%}-{high:.1%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="trials per experiment")
    parser.add_argument("--reference", type=int, default=1000, help="reference texts per trial")
    parser.add_argument("--window", type=int, default=200, help="window texts per trial")
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--mixtures", default="0.1,0.2,0.3,0.5",
                        help="shares of shifted texts in the window for partial shifts")
    parser.add_argument("--timing-runs", type=int, default=3)
    args = parser.parse_args()

    domains = load()
    names = sorted(domains)
    pairs = list(itertools.permutations(names, 2))
    rng = np.random.default_rng(0)

    def sample(pool: list[str], k: int) -> list[str]:
        return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]

    def test(reference: list[str], window: list[str], trial: int):
        return input_drift(reference, window, n_permutations=args.permutations,
                           threshold=args.threshold, seed=trial)

    print(f"data: {DATA.relative_to(ROOT)} ({sum(map(len, domains.values()))} texts, "
          f"domains {', '.join(names)})")
    print(f"test: linear MMD on TF-IDF, {args.permutations} permutations, threshold "
          f"{args.threshold}; reference {args.reference}, window {args.window}, "
          f"{args.trials} trials per row\n")

    p_values = []
    for trial in range(args.trials):
        pool = domains[names[trial % len(names)]]
        order = rng.permutation(len(pool))
        reference = [pool[i] for i in order[: args.reference]]
        window = [pool[i] for i in order[args.reference : args.reference + args.window]]
        p_values.append(test(reference, window, trial).p_value)
    p = np.array(p_values)
    print(f"stationary, false alarms at {args.threshold}:  {rate(int((p < args.threshold).sum()), len(p))}")
    print(f"stationary, false alarms at 0.05:  {rate(int((p < 0.05).sum()), len(p))}")
    print(f"stationary, mean p-value:          {p.mean():.3f} (uniform: 0.5)")

    for share in [1.0, *[float(s) for s in args.mixtures.split(",") if s]]:
        shifted = round(args.window * share)
        hits = 0
        for trial in range(args.trials):
            source, target = pairs[trial % len(pairs)]
            reference = sample(domains[source], args.reference)
            window = sample(domains[source], args.window - shifted) + sample(domains[target], shifted)
            hits += test(reference, window, trial).drifted
        label = "full topic shift" if share == 1.0 else f"partial shift {share:.0%}"
        print(f"{label + ', detection:':34s} {rate(hits, args.trials)}")

    everything = [t for name in names for t in domains[name]]
    half = len(everything) // 2
    for label, reference, window in [
        ("5,000 vs 5,000", everything[:half], everything[half:]),
        ("9,800 vs 200", everything[:-200], everything[-200:]),
    ]:
        times = []
        for run in range(args.timing_runs):
            start = time.perf_counter()
            test(reference, window, run)
            times.append(time.perf_counter() - start)
        print(f"time for 10,000 texts ({label}): median {statistics.median(times):.2f} s, "
              f"min {min(times):.2f} s over {len(times)} runs")
    print(f"\nmachine: {len(os.sched_getaffinity(0))} CPU cores visible")


if __name__ == "__main__":
    main()
