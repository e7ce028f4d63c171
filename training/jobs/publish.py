"""Publish a finished run, in order:

1. the gate (:mod:`training.gate`): candidate, base and the adapter's champion on the same
   held-out split (the recipe scored candidate and base; the job's entrypoint the champion);
2. register the adapter as the next version, PENDING (not servable), with metrics, the gate
   decision and lineage;
3. the parity check (:mod:`training.jobs.parity`): greedy replies (chat) or label probabilities
   (classification) through the engine must match PEFT's; then READY, or FAILED when they differ. Without an engine in this process the check
   is skipped (a ``parity_skipped`` event says why) and the version becomes READY;
4. promote it when the job asked for ``auto_promote`` and the gate passed.

Every step records a typed job event through ``record``.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from services import registry
from services.adapter_intake import register_adapter_dir
from services.artifacts import artifact_ref
from services.hot_swap import ChampionSwitcher, HotSwap
from services.platform import Platform
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    DatasetFile,
    FineTuningJob,
    Tenant,
    VersionState,
)
from training.config import TrainConfig
from training.gate import GateDecision, decide_gate, gate_metric
from training.jobs.candidate import Candidate
from training.jobs.champion import champion_spec
from training.jobs.engine_scoring import (
    EngineScoring,
    Target,
    evaluate_on_engine,
    evaluate_with_peft,
)
from training.jobs.parity import EngineUnavailable, ParityEngine, ParityResult
from training.jobs.parity import check_parity as run_parity_check
from training.jobs.states import EventType

log = logging.getLogger("tuneloop.jobs")

# (event type, message, data) -> None: writes one job event.
Record = Callable[[EventType, str, dict | None], None]
HELD_OUT = "held_out"  # the one split the recipe scored candidate and base on
NO_ENGINE = ("no serving engine in this process (the job ran outside `tuneloop serve`, e.g. "
             "from the CLI or with serving disabled)")


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of this checkout (``+dirty`` with local changes), else the package version."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "training"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"tuneloop=={version('tuneloop')}"
        except PackageNotFoundError:
            return "unknown"


def lineage_for(platform: Platform, job: FineTuningJob, files: dict[str, DatasetFile | None],
                parent_ref: str | None, metrics: dict[str, Any]) -> dict[str, Any]:
    def describe(row: DatasetFile | None) -> dict | None:
        return None if row is None else {"id": row.id, "sha256": row.sha256,
                                         "filename": row.filename, "examples": row.stats.get(
                                             "examples")}

    return {
        "source": "fine_tuning_job", "job_id": job.id, "run_name": job.run_name,
        "training_file": describe(files.get("training")),
        "validation_file": describe(files.get("validation")),
        "base_fingerprint": platform.base_fingerprint, "parent_version": parent_ref,
        "hyperparameters": {**job.hyperparameters, "seed": job.seed,
                            "resolved": metrics.get("hyperparameters")},
        "code_version": code_version(), "runner": job.runner,
    }


@dataclass(frozen=True)
class Published:
    """What publishing produced: the version, whether it is servable and promoted, and why not."""

    version: AdapterVersion
    ref: str
    ready: bool
    promoted: bool
    gate: GateDecision
    failure: str | None = None  # the parity failure, when not ready


def _compare_with_champion(job: FineTuningJob, checks: dict[str, Any] | None,
                           evaluation: dict[str, Any], record: Record) -> tuple[GateDecision, dict]:
    if checks is None:
        checks = {"champion_skipped": "the training run did not evaluate the champion (it "
                  "reported no checks)"}
    champion, champion_ref = checks.get("champion"), checks.get("champion_version")
    skipped = checks.get("champion_skipped")
    if champion is not None:
        evaluation["champion"] = champion
    metric, higher = gate_metric(job.task)
    gate = decide_gate({HELD_OUT: evaluation.get("adapter") or {}},
                       {HELD_OUT: champion} if champion is not None else None, HELD_OUT,
                       metric=metric, higher_is_better=higher,
                       base={HELD_OUT: evaluation.get("base") or {}},
                       champion_version=champion_ref if champion is not None else None)
    comparison = {"champion_version": champion_ref, "champion_skipped": skipped,
                  "examples": checks.get("examples") if champion is not None else None}
    record(EventType.GATE_DECISION, gate.message + (f" (champion not compared: {skipped})"
                                                     if skipped else ""),
           {**gate.to_dict(), **comparison})
    return gate, comparison


def check_parity(candidate: Candidate, checks: dict[str, Any] | None,
                 engine: ParityEngine | None, engine_name: str, adapter_path: str,
                 template: str | None, labels: list[str]) -> ParityResult | str:
    """The parity result, or the reason it was skipped (a string); see
    :func:`training.jobs.parity.check_parity` (PEFT's side comes from the training run)."""
    if engine is None:
        return NO_ENGINE
    return run_parity_check(candidate, (checks or {}).get("parity_reference"), engine,
                            engine_name, adapter_path, template, labels)


def publish(platform: Platform, job: FineTuningJob, adapter_dir: Path, *, config: TrainConfig,
            summary: dict[str, Any], checks: dict[str, Any] | None,
            files: dict[str, DatasetFile | None], parent_ref: str | None, record: Record,
            switcher: ChampionSwitcher | None = None, parity_engine: ParityEngine | None = None
            ) -> Published:
    """Compare, register PENDING, check parity, mark READY/FAILED, maybe promote (see above).

    A classification run that did not evaluate (the engine scores it:
    :mod:`training.jobs.engine_scoring`) is scored once its parity check passed, and compared
    then. The registry makes the first ready version of a new adapter its champion; later
    versions become champion only with ``auto_promote`` and a passed gate (through ``switcher``
    when serving runs here).
    """
    evaluation = dict(summary.get("eval") or {})
    candidate = Candidate(config, adapter_dir)
    classification = job.task == AdapterTask.CLASSIFICATION
    try:
        score_here = (classification and not evaluation
                      and candidate.examples_source != "training" and bool(candidate.examples))
        if not score_here:
            gate, comparison = _compare_with_champion(job, checks, evaluation, record)
        metrics = {"eval": evaluation, "train": summary.get("train") or {},
                   "validation": summary.get("validation"),
                   "datasets": summary.get("datasets") or {},
                   "wall_time_s": summary.get("wall_time_s"), "job_id": job.id}
        if not score_here:
            metrics.update(gate=gate.to_dict(), comparison=comparison)
        with platform.store.read() as session:
            tenant = session.get_one(Tenant, job.tenant_id)
            session.expunge(tenant)
        version = register_adapter_dir(
            platform, tenant, job.adapter_name, adapter_dir, task=job.task,
            labels=job.labels if classification else None,
            prompt_template=job.prompt_template if classification else None,
            metrics=metrics, lineage=lineage_for(platform, job, files, parent_ref, summary),
            state=VersionState.PENDING)
        ref = registry.version_ref(job.adapter_name, version.version)
        engine_name = registry.engine_adapter_name(tenant.name, job.adapter_name,
                                                   version.version)
        adapter_path = artifact_ref(version.artifact_key)  # the engine fetches it from the store
        parity = check_parity(candidate, checks, parity_engine, engine_name, adapter_path,
                              version.prompt_template, list(version.labels or []))
        ready, failure = _record_parity(parity, ref, record)
        if score_here:
            if ready:
                evaluation, checks = _score_held_out(
                    platform, tenant.name, job, candidate, parity_engine,
                    Target(engine_name, adapter_path, version.prompt_template or "",
                           list(version.labels or [])), checks, record)
            gate, comparison = _compare_with_champion(job, checks, evaluation, record)
    finally:
        candidate.close()
    with platform.store.write() as session:
        row = session.get_one(AdapterVersion, version.id)
        registry.set_version_state(session, row, VersionState.READY if ready
                                   else VersionState.FAILED)
        metrics = dict(row.metrics or {})
        metrics["parity"] = parity.to_dict() if not isinstance(parity, str) else {
            "skipped": parity}
        if score_here:
            metrics.update(eval=evaluation, gate=gate.to_dict(), comparison=comparison)
        row.metrics = metrics
        session.flush()
        first = session.get_one(Adapter, row.adapter_id).champion_version_id == row.id
        session.expunge(row)
    if not ready:
        if parity_engine is not None:
            try:
                parity_engine.forget(engine_name)
            except Exception:  # noqa: BLE001 - best effort: the version is never resolved
                log.warning("unloading %s after its failed parity check failed", engine_name)
        return Published(row, ref, False, False, gate, failure)
    promoted = False
    if job.auto_promote and (gate.passed or first):  # a first version is champion already
        (switcher or HotSwap(platform)).promote(tenant, job.adapter_name, version.version,
                                                f"auto_promote by fine-tuning job {job.id}")
        promoted = True
    elif job.auto_promote:
        record(EventType.MESSAGE, f"auto_promote: {ref} was not promoted because the gate "
               f"failed ({gate.message}); promote it explicitly with POST "
               f"/v1/adapters/{job.adapter_name}/promote if you want it anyway",
               {"gate": gate.to_dict()})
    return Published(row, ref, True, promoted, gate)


def _record_parity(parity: ParityResult | str, ref: str, record: Record) -> tuple[bool, str | None]:
    """Record the check's outcome; (servable, the failure when not)."""
    if isinstance(parity, str):
        record(EventType.PARITY_SKIPPED, f"parity check skipped: {parity}; {ref} is servable "
               "without it", {"reason": parity})
        return True, None
    record(EventType.PARITY_CHECKED, parity.message(ref), parity.to_dict())
    return parity.passed, None if parity.passed else parity.message(ref)


def _score_held_out(platform: Platform, tenant_name: str, job: FineTuningJob,
                    candidate: Candidate, engine: ParityEngine | None, target: Target,
                    checks: dict[str, Any] | None, record: Record
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(evaluation: the adapter's, and the base's where there is no champion; checks with the
    champion's metrics) of a run that left the held-out split to publishing: on the engine,
    else with PEFT here (the engine was gone)."""
    checks = dict(checks or {})
    spec = champion_spec(platform, job)  # the champion this version would replace, now
    comparable = spec.get("skipped") is None
    targets = {"adapter": target}
    if comparable:
        _, number = registry.parse_model_ref(spec["version"])
        assert number is not None
        targets["champion"] = Target(
            registry.engine_adapter_name(tenant_name, job.adapter_name, number),
            artifact_ref(spec["artifact_key"]), spec.get("prompt_template") or "",
            list(spec.get("labels") or []))
    else:  # the base only where there is no champion to compare with (the gate's fallback)
        targets["base"] = Target(None, None, target.template, target.labels)
    checks.update(champion_version=spec.get("version"), champion_skipped=spec.get("skipped"),
                  examples=len(candidate.examples))
    scored: dict[str, dict[str, Any]] | None = None
    if isinstance(engine, EngineScoring) and engine.configured:
        try:
            scored = evaluate_on_engine(engine, candidate, targets)
        except EngineUnavailable as exc:
            record(EventType.MESSAGE, f"the engine could not score the held-out split ({exc}); "
                   "PEFT scores it in this process instead", {"reason": str(exc)})
    if scored is None:
        scored = evaluate_with_peft(candidate, {
            **spec, "adapter_dir": platform.artifacts.materialize_dir(spec["artifact_key"])
        } if comparable else None)
    checks["champion"] = ({**scored["champion"], "version": spec["version"]}
                          if "champion" in scored else None)
    evaluation = {name: metrics for name, metrics in scored.items() if name != "champion"}
    scorer = scored["adapter"]["scorer"]
    accuracies = ", ".join(f"{name} {metrics['accuracy']:.3f}" for name, metrics in scored.items())
    record(EventType.EVALUATED, f"evaluated on the held-out split ({len(candidate.examples)} "
           f"examples, {'on the engine' if scorer == 'engine' else 'with PEFT'}): accuracy "
           f"{accuracies}", scored)
    return evaluation, checks
