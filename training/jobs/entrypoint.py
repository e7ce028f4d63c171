"""A fine-tuning job's training entrypoint: the recipe, then the job's model-touching checks on
the same machine (the training machine, not the server), on the run's held-out split:

- the adapter's current champion scored on that split (the recipe scored candidate and base);
- the parity reference: PEFT's greedy replies (chat) or label probabilities (classification)
  for the first held-out prompts, which the server later compares with the engine's
  (:mod:`training.jobs.parity`).

``python -m training.jobs.entrypoint --checks checks.json --config config.json`` (the config is
the last argument, as for ``training.recipe``). ``checks.json`` holds ``{"champion": spec}``
(:func:`training.jobs.champion.champion_spec`). Writes ``<output_dir>/job_checks.json``. A failing
check does not fail the run: it is recorded and publishing carries on without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.store.models import AdapterTask
from training import progress
from training.config import TrainConfig
from training.jobs.candidate import Candidate
from training.jobs.champion import evaluate_champion
from training.jobs.parity import peft_reference

CHECKS_FILE = "job_checks.json"


def job_entrypoint(config_path: str | Path, checks_path: str | Path,
                   python: str | None = None) -> list[str]:
    """The command a job runner runs for one job."""
    return [python or sys.executable, "-m", "training.jobs.entrypoint", "--checks",
            str(checks_path), "--config", str(config_path)]


def run_checks(config: TrainConfig, adapter_dir: Path, champion: dict[str, Any]
               ) -> dict[str, Any]:
    """Champion metrics and the parity reference for a finished run (see the module doc)."""
    candidate = Candidate(config, adapter_dir)
    out: dict[str, Any] = {"champion": None, "champion_version": champion.get("version"),
                           "champion_skipped": champion.get("skipped"),
                           "parity_reference": None, "examples": None}
    try:
        out["examples"] = len(candidate.examples)
        if not candidate.examples and out["champion_skipped"] is None:
            out["champion_skipped"] = "there is no held-out split"
        if out["champion_skipped"] is None and config.evaluate:
            out["champion"] = evaluate_champion(candidate, champion)
            progress.emit(config.progress_file, "champion_evaluated", **out["champion"])
        out["parity_reference"] = peft_reference(
            candidate, config.prompt_template if config.task == AdapterTask.CLASSIFICATION else None,
            list(config.labels or []))
    except Exception as exc:  # noqa: BLE001 - recorded; publishing goes on without the check
        if out["champion"] is None and out["champion_skipped"] is None:
            out["champion_skipped"] = f"evaluating the champion failed: {exc}"
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        candidate.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a tuneloop fine-tuning job's training.")
    parser.add_argument("--checks", required=True, help="checks.json (the champion to compare)")
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    args = parser.parse_args(argv)
    from training.recipe import run_training

    config = TrainConfig.from_json(args.config)
    try:
        result = run_training(config)
    except Exception as exc:  # noqa: BLE001 - reported as exit 1, like the recipe's entrypoint
        print(f"training failed: {exc}", file=sys.stderr)
        return 1
    spec = json.loads(Path(args.checks).read_text(encoding="utf-8")).get("champion") or {}
    checks = run_checks(config, result.adapter_dir, spec)
    path = Path(config.output_dir) / CHECKS_FILE
    path.write_text(json.dumps(checks, indent=2, default=str), encoding="utf-8")
    print(json.dumps({"adapter_dir": str(result.adapter_dir), "checks": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
