"""The adapter's champion when a job starts, scored on the candidate's held-out split.

:func:`champion_spec` names the adapter's current champion when the job starts;
:func:`evaluate_champion` scores it in the training run (:mod:`training.jobs.entrypoint`, on the
training machine, never in the server) on the split the recipe scored the candidate and the
base on; publishing then gates the candidate with :func:`training.gate.decide_gate`. Publishing
honours the gate for ``auto_promote`` only: a version that fails it is still registered (and
can be promoted explicitly).
"""

from __future__ import annotations

from typing import Any

from services import registry
from services.platform import Platform
from services.store.models import Adapter, AdapterTask, AdapterVersion, FineTuningJob, VersionState
from training.jobs.candidate import CHAMPION, Candidate


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
    ``{"version", "artifact_key", "labels", "prompt_template"}`` (the run fetches the adapter
    from the store), or ``{"version", "skipped"}`` when there is no comparable champion."""
    champion = current_champion(platform, job)
    if champion is None:
        return {"version": None, "skipped": "the adapter has no champion yet"}
    ref = registry.version_ref(job.adapter_name, champion.version)
    if champion.task != job.task:
        return {"version": ref, "skipped": f"champion {ref} is a {champion.task} adapter"}
    labels = list(job.labels or [])
    if job.task == AdapterTask.CLASSIFICATION and set(champion.labels or []) != set(labels):
        return {"version": ref, "skipped": f"champion {ref} has labels {champion.labels}, the "
                f"candidate {labels}: their accuracies are not comparable"}
    return {"version": ref, "labels": champion.labels, "prompt_template": champion.prompt_template,
            "artifact_key": champion.artifact_key}


def evaluate_champion(candidate: Candidate, spec: dict[str, Any]) -> dict[str, Any]:
    """The champion's metrics on the candidate's held-out split (``spec`` from
    :func:`champion_spec`, with the ``adapter_dir`` the run fetched); runs where the candidate
    was trained."""
    from training import scoring

    examples = candidate.examples
    candidate.load_champion(spec["adapter_dir"])
    model, tokenizer = candidate.model(CHAMPION)
    config = candidate.config
    if config.task == AdapterTask.CLASSIFICATION:
        metrics = scoring.evaluate_classifier(model, tokenizer, spec["prompt_template"],
                                              examples, spec["labels"])
    else:
        metrics = scoring.evaluate_chat(model, tokenizer, examples, max_length=config.max_length,
                                        max_new_tokens=config.max_new_tokens)
    return {**metrics, "version": spec["version"]}
