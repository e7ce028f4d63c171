"""A fine-tuning job's training run, on whatever machine the runner picked: fetch the job's
inputs from its workspace in the artifact store (:mod:`training.jobs.workspace`), train with the
recipe (progress and Ray Train checkpoints go to the workspace), run the job's model-touching
checks on the same machine on the run's held-out split, and hand the result back through the
store:

- the adapter's current champion scored on that split (the recipe scored candidate and base);
- the parity reference: PEFT's greedy replies (chat) or label probabilities (classification)
  for the first held-out prompts, which the server later compares with the engine's
  (:mod:`training.jobs.parity`).

``python -m training.jobs.entrypoint --job <workspace URL>``. The machine needs the artifact
store's credentials (the standard ``AWS_*`` environment for S3) and its own copy of the base
model (``TUNELOOP_BASE_MODEL``, or the default model, imported on first use); nothing else is
shared with the server. Writes the adapter to the store and ``result.json`` to the workspace. A
failing check does not fail the run: it is recorded and publishing carries on without it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.artifacts import ArtifactStore
from services.store.models import AdapterTask
from training import progress
from training.config import TrainConfig
from training.jobs.candidate import Candidate
from training.jobs.champion import evaluate_champion
from training.jobs.parity import peft_reference
from training.jobs.workspace import LOCAL_FIELDS, RESULT, DataInput, JobWorkspace, read_spec


def job_entrypoint(workspace: JobWorkspace, python: str | None = None) -> list[str]:
    """The command a job runner runs for one job."""
    return [python or sys.executable, "-m", "training.jobs.entrypoint", "--job", workspace.url]


@dataclass(frozen=True)
class PreparedRun:
    """A job's run on this machine: its config with local paths, the champion to score."""

    config: TrainConfig
    champion: dict[str, Any]
    store: ArtifactStore


def prepare_run(workspace: JobWorkspace, scratch: Path) -> PreparedRun:
    """Fetch the job's inputs from the store into ``scratch`` and resolve this machine's base
    model (checked against the job's fingerprint)."""
    from services.base_model import resolve_base_model
    from services.settings import Settings

    spec = read_spec(workspace)
    store = ArtifactStore(spec.artifacts_url, cache_dir=scratch / "cache")

    def data(item: DataInput | None, name: str) -> str | None:
        if item is None:
            return None
        path = scratch / f"{name}{item.suffix}"
        path.write_bytes(store.get_bytes(item.key))
        return str(path)

    settings = Settings()
    base = resolve_base_model(settings.resolved_base_model, spec.base_fingerprint,
                              default_dir=settings.default_base_model_dir)
    local = {"base_model": str(base), "output_dir": str(scratch / "output"),
             "train_file": data(spec.training, "training"),
             "eval_file": data(spec.validation, "validation"),
             "parent_adapter": str(store.materialize_dir(spec.parent_key))
             if spec.parent_key else None}
    assert set(local) == set(LOCAL_FIELDS)
    config = TrainConfig.from_dict({**spec.config, **local,
                                    "base_fingerprint": spec.base_fingerprint})
    champion = dict(spec.champion)
    key = champion.pop("artifact_key", None)
    if key is not None:
        champion["adapter_dir"] = str(store.materialize_dir(key))
    return PreparedRun(config, champion, store)


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
    parser = argparse.ArgumentParser(description="Run one tuneloop fine-tuning job's training.")
    parser.add_argument("--job", required=True, help="the job's workspace URL in the artifact store")
    args = parser.parse_args(argv)
    from training.recipe import run_training

    workspace = JobWorkspace(args.job)
    scratch = Path(tempfile.mkdtemp(prefix="tuneloop-run-"))
    try:
        try:
            run = prepare_run(workspace, scratch)
            result = run_training(run.config)
        except Exception as exc:  # noqa: BLE001 - reported as exit 1, like the recipe's entrypoint
            progress.emit(workspace.progress_url, "failed", reason=str(exc),
                          error=type(exc).__name__)
            print(f"training failed: {exc}", file=sys.stderr)
            return 1
        checks = run_checks(run.config, result.adapter_dir, run.champion)
        adapter_key = run.store.put_dir(result.adapter_dir)
        workspace.write_json(RESULT, {"adapter_key": adapter_key, "metrics": result.metrics,
                                      "checks": checks})
        print(json.dumps({"adapter_key": adapter_key, "workspace": workspace.url}))
        return 0
    finally:
        progress.flush()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
