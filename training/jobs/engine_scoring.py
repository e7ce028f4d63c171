"""A classification job's held-out evaluation on the serving engine instead of in the training
run (issue 14: score where the tenant will be served).

When the job manager's process reaches an engine, a classification run skips its PEFT
evaluation (``TrainConfig.evaluate`` off: no candidate, base or champion scoring in float32, one
text at a time); publishing scores the same held-out split (:class:`Candidate.examples`) on the
engine once the pending version passed its parity check: the candidate under its engine-side
name and the adapter's champion (the base model where there is no champion to compare with),
every text in flight. A retrain's gate reuses these scores of its new split
(:mod:`monitoring.retrain`) instead of scoring it again. The label probabilities
are the ones ``/v1/classify`` answers with, the predicted label the most probable, and the
metrics :func:`training.evaluation.classification_metrics` (as the recipe's). An engine that is
gone by then is not a reason to publish without metrics: PEFT scores the split in this process
instead (``scorer: peft``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from services.store.models import AdapterTask, FineTuningJob
from training.evaluation import classification_metrics
from training.jobs.candidate import Candidate


@runtime_checkable
class EngineScoring(Protocol):
    """What the engine side offers beyond the parity check (see
    :class:`serving.gateway.parity_engine.GatewayEngine`)."""

    @property
    def configured(self) -> bool:
        """Whether this process reaches an engine at all (answered at once, nothing waited)."""
        ...

    def label_probabilities(self, engine_name: str | None, adapter_path: str | None,
                            template: str, texts: list[str], labels: list[str]
                            ) -> list[dict[str, float]]:
        """As :meth:`training.jobs.parity.ParityEngine.label_probabilities`; ``engine_name``
        and ``adapter_path`` None: the base model."""
        ...


def scores_on_engine(engine: object, job: FineTuningJob) -> bool:
    """Whether ``job``'s evaluation runs on the engine (classification, an engine reached)."""
    return (job.task == AdapterTask.CLASSIFICATION and isinstance(engine, EngineScoring)
            and engine.configured)


@dataclass(frozen=True)
class Target:
    """One model to score: an adapter version under its engine-side name and ``artifact:`` path
    (both None: the base model), with its own prompt template and labels."""

    engine_name: str | None
    adapter_path: str | None
    template: str
    labels: list[str]


def evaluate_on_engine(engine: EngineScoring, candidate: Candidate,
                       targets: dict[str, Target]) -> dict[str, dict[str, Any]]:
    """Metrics of each target on the candidate's held-out split, keyed like ``targets``; each
    carries ``scorer: engine``. Raises EngineUnavailable when no engine can score."""
    examples = candidate.examples
    texts = [e.text for e in examples]
    truth = [e.label for e in examples]
    results: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        found = engine.label_probabilities(target.engine_name, target.adapter_path,
                                           target.template, texts, list(target.labels))
        predicted = [max(p, key=p.__getitem__) if p else "" for p in found]
        results[name] = {**classification_metrics(truth, predicted, list(target.labels)),
                         "scorer": "engine"}
    return results


def evaluate_with_peft(candidate: Candidate, champion: dict[str, Any] | None
                       ) -> dict[str, dict[str, Any]]:
    """The same metrics from PEFT in this process (the engine was gone): the candidate and,
    given the champion's spec (:func:`training.jobs.champion.champion_spec` with the
    ``adapter_dir`` it was fetched to), the champion, else the base."""
    from training import scoring
    from training.jobs.champion import evaluate_champion

    config = candidate.config
    examples, labels = candidate.examples, list(config.labels or [])
    model, tokenizer = candidate.model()
    template = config.prompt_template or ""
    results = {"adapter": scoring.evaluate_classifier(model, tokenizer, template, examples, labels)}
    if champion is None:
        with model.disable_adapter():
            results["base"] = scoring.evaluate_classifier(model, tokenizer, template, examples,
                                                          labels)
    else:
        results["champion"] = evaluate_champion(candidate, champion)
    return {name: {**metrics, "scorer": "peft"} for name, metrics in results.items()}
