"""The promotion gate's scoring on the serving engines
(:class:`monitoring.candidate_eval.Evaluator`).

A version is loaded on an engine under its engine-side name, the way serving and the parity
check load it (tenants only ever reach a version through the gateway's resolution, so a
candidate the gate has not passed is invisible to them), and the held-out splits are scored
there, batched and concurrently:

- classification: the label probabilities ``/v1/classify`` computes
  (:meth:`serving.classify.Classifier.classify_many`, first-token scoring, all texts in flight
  at once); the predicted label is the most probable;
- chat: scored with PEFT (``fallback``). The eval loss needs the engine's teacher-forced
  log-probabilities of the reply (vLLM ``prompt_logprobs``), and vLLM's CPU LoRA kernels crash
  the whole engine when such a request shares a batch with another one (``bgmv_shrink``: the
  LoRA mapping has one row per request, the prompt log-probabilities one per prompt token;
  tests/serving/test_gateway.py keeps tenants from sending them). Chat moves to the engine
  where that is fixed.

A candidate the gate refuses is unloaded (:meth:`EngineEvaluator.release`). A process that
reaches no engine scores with PEFT instead (``fallback``); once an engine is configured, an engine
that is not ready is an error (the monitor retries the gate on its next pass), never a silent
switch to another scorer between the candidate and the champion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from monitoring.candidate_eval import (
    Distributions,
    Evaluator,
    VersionSpec,
    capped,
    classification_result,
    predicted,
    template_of,
)
from services.artifacts import artifact_ref
from services.errors import Unavailable
from services.store.models import AdapterTask
from serving.classify import Classifier
from serving.engine_client import EngineClient
from serving.gateway.pool_access import PoolAccess
from serving.placement import EnginePool
from training.jobs.parity import EngineUnavailable


class EngineEvaluator:
    """Scores versions on the engines of ``access`` (see the module doc); ``max_examples`` caps
    each split like :class:`monitoring.candidate_eval.ScoringEvaluator`."""

    def __init__(self, access: PoolAccess, *, fallback: Evaluator, max_examples: int = 200
                 ) -> None:
        self.access = access
        self.fallback = fallback
        self.max_examples = max_examples
        self._seen = Distributions()

    def scorer(self, task: str) -> str:
        """``engine`` for classification wherever an engine is configured, else the fallback's."""
        if self.access.configured and task == AdapterTask.CLASSIFICATION:
            return "engine"
        return self.fallback.scorer(task)

    def evaluate(self, spec: VersionSpec, splits: Mapping[str, Sequence[dict[str, Any]]]
                 ) -> dict[str, dict[str, float]]:
        if not self.access.configured or spec.task != AdapterTask.CLASSIFICATION:
            return self.fallback.evaluate(spec, splits)
        wanted = capped(splits, self.max_examples)
        if not wanted:
            return {}
        path = artifact_ref(spec.artifact_key)

        async def run(pool: EnginePool) -> dict[str, dict[str, float]]:
            async def score(client: EngineClient) -> dict[str, dict[str, float]]:
                classifier = Classifier(client)  # the label plan is built once for all splits
                return {name: await self._measure(classifier, spec, records)
                        for name, records in wanted.items()}

            return await pool.call(spec.engine_name, path, score)

        try:
            return self.access.run(run)
        except EngineUnavailable as exc:
            raise Unavailable(f"cannot score {spec.ref} on the engines: {exc}; the gate runs "
                              "again on the monitor's next pass", retry_after_s=30) from exc

    def release(self, spec: VersionSpec) -> None:
        if self.access.configured and spec.task == AdapterTask.CLASSIFICATION:
            self.access.unload(spec.engine_name)

    def label_distributions(self, spec: VersionSpec, records: Sequence[dict[str, Any]]
                            ) -> list[dict[str, float]] | None:
        if not self.access.configured or spec.task != AdapterTask.CLASSIFICATION:
            return self.fallback.label_distributions(spec, records)
        return self._seen.fetch(spec, records, self.max_examples, self.evaluate)

    async def _measure(self, classifier: Classifier, spec: VersionSpec,
                       records: list[dict[str, Any]]) -> dict[str, float]:
        texts = [r["text"] for r in records]
        results = await classifier.classify_many(
            spec.engine_name, template_of(spec), texts, list(spec.labels or []))
        found = [dict(r.probabilities) for r in results]
        self._seen.put(spec.engine_name, texts, found)
        return classification_result(spec, records, predicted(found))
