"""Time from the traffic shift's start to the new champion serving, on the demo story.

Runs ``tuneloop demo``'s story (real gateway and vLLM engine, Ray training, the monitor thread,
real VADER texts) under a temporary data dir and prints one JSON line: the seconds from the first
shifted request to v2 serving, the gate's evaluation and the accuracies served by the engine.

Usage: python benchmarks/loop_demo.py [--small]   (--small: the integration test's sizes)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the integration test's sizes")
    args = parser.parse_args()

    import ray

    from tuneloop.cli.demo import Story, demo_settings, run_story

    story = Story()
    if args.small:
        from tests.monitoring.test_loop_integration import SMALL

        story = Story(**SMALL)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory(prefix="tuneloop-loop-demo-") as tmp:
            settings = demo_settings(Path(tmp)).model_copy(
                update={"ray_address": ray.get_runtime_context().gcs_address})
            began = time.monotonic()
            result = run_story(settings, story, say=lambda line: print(line, file=sys.stderr))
            run = result["run"]
            print(json.dumps({
                "story": "small" if args.small else "default",
                "seconds_total": round(time.monotonic() - began, 1),
                "seconds_shift_to_new_champion": round(result["seconds_to_new_champion"], 1),
                "status": run["status"], "trigger": run["trigger"],
                "gate_evaluation": run["evaluation"], "served_accuracy": result["served"],
            }))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
