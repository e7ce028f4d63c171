"""Candidate vs champion on the same held-out split, and the gate decision a job records.

:func:`champion_spec` names the adapter's current champion when the job starts;
:func:`evaluate_champion` scores it in the training run (:mod:`training.jobs.entrypoint`, on the
training machine, never in the server) on the split the recipe scored the candidate and the
base on; :func:`decide_gate` (pure) compares the three on one metric:
accuracy for classification (higher is better), eval loss for chat (lower is better). The gate
passes when the candidate is at least as good as the champion, or, for an adapter with no
champion yet, as the base. Publishing honours it for ``auto_promote`` only: a version that
fails the gate is still registered (and can be promoted explicitly).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from services import registry
from services.platform import Platform
from services.store.models import Adapter, AdapterVersion, FineTuningJob, VersionState
from training.jobs.candidate import CHAMPION, Candidate

EPSILON = 1e-9  # ties pass: float noise must not fail an identical model


class GateReason(StrEnum):
    """Why the gate passed or failed."""

    BEATS_CHAMPION = "beats_champion"
    TIES_CHAMPION = "ties_champion"
    WORSE_THAN_CHAMPION = "worse_than_champion"
    BEATS_BASE = "beats_base"  # no champion to compare with
    WORSE_THAN_BASE = "worse_than_base"
    NOT_EVALUATED = "not_evaluated"  # no held-out metric: nothing to decide on


def gate_metric(task: str) -> tuple[str, bool]:
    """(metric, higher is better) for a task."""
    return ("accuracy", True) if task == "classification" else ("eval_loss", False)


@dataclass(frozen=True)
class GateDecision:
    """The typed content of a job's ``gate_decision`` event."""

    passed: bool
    reason: GateReason
    metric: str
    higher_is_better: bool
    candidate: float | None
    base: float | None
    champion: float | None
    champion_version: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": str(self.reason)}


def decide_gate(task: str, evaluation: dict[str, Any], champion_version: str | None = None
                ) -> GateDecision:
    """Compare ``evaluation["adapter"]`` with ``["champion"]`` (else ``["base"]``)."""
    metric, higher = gate_metric(task)

    def value(key: str) -> float | None:
        found = (evaluation.get(key) or {}).get(metric)
        return float(found) if isinstance(found, int | float) else None

    candidate, base, champion = value("adapter"), value("base"), value("champion")
    fields = {"metric": metric, "higher_is_better": higher, "candidate": candidate,
              "base": base, "champion": champion, "champion_version": champion_version}
    if candidate is None:
        return GateDecision(False, GateReason.NOT_EVALUATED, message=(
            f"no held-out {metric} for the candidate, so it cannot be compared; give a "
            "validation_file (or keep eval_fraction > 0) to gate it"), **fields)
    reference, name = (champion, f"champion {champion_version}") if champion is not None \
        else (base, "base model")
    if reference is None:
        return GateDecision(False, GateReason.NOT_EVALUATED, message=(
            f"candidate {metric} {candidate:.4f}, but there is neither a champion nor a base "
            "score to compare with"), **fields)
    margin = (candidate - reference) if higher else (reference - candidate)
    if champion is not None:
        reason = (GateReason.BEATS_CHAMPION if margin > EPSILON else
                  GateReason.TIES_CHAMPION if margin >= -EPSILON else
                  GateReason.WORSE_THAN_CHAMPION)
    else:
        reason = GateReason.BEATS_BASE if margin >= -EPSILON else GateReason.WORSE_THAN_BASE
    passed = reason in (GateReason.BEATS_CHAMPION, GateReason.TIES_CHAMPION,
                        GateReason.BEATS_BASE)
    verdict = "passed" if passed else "failed"
    return GateDecision(passed, reason, message=(
        f"gate {verdict}: candidate {metric} {candidate:.4f} vs {name} {reference:.4f} "
        f"({'higher' if higher else 'lower'} is better)"), **fields)


def current_champion(platform: Platform, job: FineTuningJob) -> AdapterVersion | None:
    """The job's adapter's current ready champion, or None (a new adapter)."""
    from sqlalchemy import select

    with platform.store.read() as session:
        adapter = session.scalar(select(Adapter).where(
            Adapter.tenant_id == job.tenant_id, Adapter.name == job.adapter_name))
        if adapter is None or adapter.champion_version_id is None:
            return None
        champion = session.get(AdapterVersion, adapter.champion_version_id)
        if champion is None or champion.state != VersionState.READY:
            return None
        session.expunge(champion)
        return champion


def champion_spec(platform: Platform, job: FineTuningJob) -> dict[str, Any]:
    """What the training run needs to score the champion on its held-out split:
    ``{"version", "adapter_dir", "labels", "prompt_template"}``, or ``{"version", "skipped"}``
    when there is no comparable champion."""
    champion = current_champion(platform, job)
    if champion is None:
        return {"version": None, "skipped": "the adapter has no champion yet"}
    ref = registry.version_ref(job.adapter_name, champion.version)
    if champion.task != job.task:
        return {"version": ref, "skipped": f"champion {ref} is a {champion.task} adapter"}
    labels = list(job.labels or [])
    if job.task == "classification" and set(champion.labels or []) != set(labels):
        return {"version": ref, "skipped": f"champion {ref} has labels {champion.labels}, the "
                f"candidate {labels}: their accuracies are not comparable"}
    return {"version": ref, "labels": champion.labels, "prompt_template": champion.prompt_template,
            "adapter_dir": str(platform.artifacts.materialize_dir(champion.artifact_key))}


def evaluate_champion(candidate: Candidate, spec: dict[str, Any]) -> dict[str, Any]:
    """The champion's metrics on the candidate's held-out split (``spec`` from
    :func:`champion_spec`, with an ``adapter_dir``); runs where the candidate was trained."""
    from training import scoring

    examples = candidate.examples
    candidate.load_champion(spec["adapter_dir"])
    model, tokenizer = candidate.model(CHAMPION)
    config = candidate.config
    if config.task == "classification":
        metrics = scoring.evaluate_classifier(model, tokenizer, spec["prompt_template"],
                                              examples, spec["labels"])
    else:
        metrics = scoring.evaluate_chat(model, tokenizer, examples, max_length=config.max_length,
                                        max_new_tokens=config.max_new_tokens)
    return {**metrics, "version": spec["version"]}
