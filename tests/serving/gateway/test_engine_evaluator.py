"""The gate's scoring on the serving engine: the session's real vLLM engine scores a trained
classification adapter's held-out splits and agrees with PEFT in this process; a refused
candidate is unloaded; chat, and a process without an engine, score with PEFT; a configured
engine that is down is an error (the gate waits for the next pass), never a switch of scorer."""

from __future__ import annotations

import pytest

from monitoring.candidate_eval import ScoringEvaluator, VersionSpec
from services.errors import Unavailable
from serving.gateway.engine_evaluator import EngineEvaluator
from serving.gateway.pool_access import PoolAccess
from training.gate import label_kl
from training.jobs.parity import LABEL_TOLERANCE

# -- no engine / engine down ----------------------------------------------------------------------


class RecordingFallback:
    def __init__(self) -> None:
        self.evaluated: list[str] = []

    def evaluate(self, spec, splits):  # noqa: ANN001, ANN201
        self.evaluated.append(spec.ref)
        return {"new": {"accuracy": 1.0, "examples": 1}}

    def release(self, spec) -> None:  # noqa: ANN001
        raise AssertionError("nothing to release without an engine")

    def scorer(self, task: str) -> str:
        return "peft"


SPEC = VersionSpec("acme", "topics", 2, "classification", ["a", "b"], None, "0" * 64)


def test_without_an_engine_the_gate_scores_with_peft(loop):
    fallback = RecordingFallback()
    evaluator = EngineEvaluator(PoolAccess(None, loop), fallback=fallback)
    assert evaluator.scorer("classification") == "peft"
    assert evaluator.evaluate(SPEC, {"new": [{"text": "t", "label": "a"}]}) == {
        "new": {"accuracy": 1.0, "examples": 1}}
    assert fallback.evaluated == ["topics@v2"]
    evaluator.release(SPEC)  # nothing loaded anywhere: a no-op


def test_a_configured_engine_that_is_down_is_an_error_not_a_switch_of_scorer(loop):
    class DownSlot:
        def is_ready(self) -> bool:
            return False

    class Dispatcher:
        pool = type("Pool", (), {"slots": [DownSlot()]})()

    fallback = RecordingFallback()
    evaluator = EngineEvaluator(PoolAccess(Dispatcher(), loop, wait_s=0), fallback=fallback)
    assert evaluator.scorer("classification") == "engine"
    with pytest.raises(Unavailable, match="cannot score topics@v2 on the engines: no engine was "
                       "ready within 0 s; the gate runs again on the monitor's next pass"):
        evaluator.evaluate(SPEC, {"new": [{"text": "t", "label": "a"}]})
    assert fallback.evaluated == []
    chat = VersionSpec("acme", "support", 1, "chat", None, None, "0" * 64)
    assert evaluator.scorer("chat") == "peft"  # see serving/gateway/engine_evaluator.py
    evaluator.evaluate(chat, {"new": [{"messages": []}]})
    assert fallback.evaluated == ["support@v1"]


# -- the real engine ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(engine, engine_settings, loop_thread, base_model_dir, trained_adapter,
           tmp_path_factory):
    """A platform sharing the engine's artifact store, the trained adapter registered as a chat
    and a classification version, and an engine evaluator over a dispatcher of the engine."""
    from monitoring.metrics import Metrics
    from services.adapter_intake import register_adapter_dir
    from services.platform import Platform
    from services.settings import Settings
    from services.tenants import create_tenant
    from serving.gateway.dispatch import Dispatcher
    from tests.support import lora_training

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("gate-data"), base_model=str(base_model_dir),
        engine_urls=[engine.url], artifacts_url=engine_settings.resolved_artifacts_url,
        engine_api_key=engine_settings.engine_api_key, max_cpu_loras=8,
        request_timeout_s=120)
    platform = Platform.open(settings)
    with platform.store.write() as session:
        create_tenant(session, "acme")
    topics = register_adapter_dir(platform, "acme", "topics", trained_adapter,
                                  task="classification", labels=lora_training.CLASSIFY_LABELS)

    async def connect() -> Dispatcher:
        dispatcher = Dispatcher(settings, platform, Metrics())
        await dispatcher.connect(settings.engine_urls)
        return dispatcher

    dispatcher = loop_thread.run(connect())
    evaluator = EngineEvaluator(PoolAccess(dispatcher, loop_thread.loop, wait_s=60),
                                fallback=ScoringEvaluator(platform))

    def spec(row, name: str) -> VersionSpec:  # noqa: ANN001
        return VersionSpec("acme", name, row.version, row.task, row.labels, row.prompt_template,
                           row.artifact_key)

    yield platform, evaluator, dispatcher, spec(topics, "topics")
    loop_thread.run(dispatcher.close())
    platform.close()


def test_engine_scores_agree_with_peft(scored):
    from tests.support import lora_training

    platform, evaluator, _, topics_spec = scored
    texts = {"new": [{"text": t, "label": label} for t, label in lora_training.CLASSIFY_EXAMPLES],
             "previous": [{"text": "Heavy snow is expected overnight.", "label": "weather"},
                          {"text": "The striker was sent off after a foul.", "label": "sports"},
                          {"text": "Whisk the eggs with sugar and flour.", "label": "cooking"},
                          {"text": "Whisk the eggs with sugar and flour.", "label": "sports"}]}
    peft = ScoringEvaluator(platform)
    on_engine = evaluator.evaluate(topics_spec, texts)
    assert on_engine == peft.evaluate(topics_spec, texts)
    assert on_engine["new"] == {"accuracy": 1.0, "macro_f1": 1.0, "examples": 6}
    assert on_engine["previous"]["accuracy"] == 0.75  # the wrong label is scored as wrong

    # The forgetting measure's label distributions: the engine's agree with PEFT's within the
    # parity check's tolerance, and a version does not move from itself.
    engine_d = evaluator.label_distributions(topics_spec, texts["previous"])
    peft_d = peft.label_distributions(topics_spec, texts["previous"])
    assert len(engine_d) == len(peft_d) == 4
    assert max(abs(e[k] - p[k]) for e, p in zip(engine_d, peft_d) for k in e) < LABEL_TOLERANCE
    assert label_kl(engine_d, engine_d) == 0.0
    assert label_kl(peft_d, engine_d) < 0.01


def test_a_refused_candidate_is_unloaded_from_the_engines(scored, loop_thread):
    _, evaluator, dispatcher, topics_spec = scored
    evaluator.evaluate(topics_spec, {"new": [{"text": "Rain again.", "label": "weather"}]})
    slot = dispatcher.pool.slots[0]
    assert slot.placement.is_loaded(topics_spec.engine_name)

    async def engine_models() -> set[str]:
        return {m["id"] for m in await slot.client.list_models()}

    assert topics_spec.engine_name in loop_thread.run(engine_models())
    evaluator.release(topics_spec)
    assert not slot.placement.is_loaded(topics_spec.engine_name)
    assert topics_spec.engine_name not in loop_thread.run(engine_models())
