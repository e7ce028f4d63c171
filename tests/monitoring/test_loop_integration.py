"""The whole loop, real: the gateway with a spawned vLLM engine, Ray training, the monitor thread,
real human-labeled texts (tuneloop/data/vader_sentiment). This is ``tuneloop demo``'s story at a
smaller size, so the demo is tested too.

1. v1 learns sentiment on tweets and movie reviews; the traffic shifts to editorials and product
   reviews; labels arrive as feedback; the monitor detects the drift; the policy starts a
   retrain warm-started from v1 on the feedback (plus replayed v1 data); the gate compares v2
   with v1 on held-out new and old data; v2 is promoted by hot swap. Asserted on fresh texts
   served by the engine (never seen in training): v2 is clearly better on the new data; on v1's
   own held-out old data it is not worse than the gate's tolerance.
2. Rollback, on the same engine and store: users report the responses of the promoted v2 that
   were wrong (true labels of fresh texts v2 misclassified, and a few it got right) through
   ``/v1/feedback``; the monitor finds v2's accuracy on fresh labeled feedback significantly
   below its baseline and rolls back; ``/v1/classify`` answers with v1 again.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.engine, pytest.mark.slow,
              pytest.mark.timeout(1800)]

SMALL = {"v1_train": 120, "v1_valid": 100, "old_traffic": 50, "new_traffic": 250, "chunk": 50,
         "min_new_labels": 240, "probe": 150, "probe_old": 0, "window_size": 100,
         "monitor_interval_s": 2.0, "eval_fraction": 0.4, "gate_tolerance": 0.05, "gate_min_improvement": 0.0,
         # validate_every: one validation at the end, not one per epoch (nothing here reads
         # the curve; each pass costs ~25 s on 2 cores)
         "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5,
                             "max_length": 96, "validate_every": 1_000_000},
         "retrain_hyperparameters": {"n_epochs": 2, "batch_size": 8,
                                     "learning_rate_multiplier": 5, "max_length": 96,
                                     "validate_every": 1_000_000}}
CLEAR_GAIN = 0.05
"""v2's least accuracy gain on fresh new-domain texts (150 texts: one text is 0.0067)."""


@pytest.fixture(scope="module")
def ray_address():
    """A Ray started from the main thread (training subprocesses join it)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def report_wrong_answers(api, result: dict) -> None:
    """Users label the champion's (v2's) wrong answers on fresh texts, and a few right ones;
    then wait for the monitor to roll v2 back. Stores what happened in ``result``."""
    if result.get("champion") != "sentiment@v2":
        return  # the test fails on the promotion; nothing to roll back
    rows = result["probe_rows"]["new"]

    def classify(row: dict) -> tuple[dict, dict]:
        return api.call("POST", "/v1/classify", json={"model": "sentiment",
                                                      "input": row["text"]}), row

    with ThreadPoolExecutor(4) as pool:
        served = list(pool.map(classify, rows))
    assert {out["model"] for out, _ in served} == {"sentiment@v2"}
    wrong = [(o, r) for o, r in served if o["data"][0]["label"] != r["label"]]
    right = [(o, r) for o, r in served if o["data"][0]["label"] == r["label"]]
    right.sort(key=lambda p: hashlib.sha256(p[0]["id"].encode()).hexdigest())
    reported = wrong + right[:len(wrong) // 4]
    api.call("POST", "/v1/feedback", json={"data": [
        {"response_id": o["id"], "label": r["label"], "id": f"rollback-{o['id']}"}
        for o, r in reported]})
    result["rollback_feedback"] = {"labels": len(reported), "wrong": len(wrong)}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if api.call("GET", "/v1/adapters/sentiment")["champion"] == "sentiment@v1":
            break
        time.sleep(1.0)
    result["after_rollback"] = {
        "adapter": api.call("GET", "/v1/adapters/sentiment"),
        "events": api.call("GET", "/v1/adapters/sentiment/events?type=rollback&limit=5")["data"],
        "retrains": api.call("GET", "/v1/adapters/sentiment/retrains")["data"],
        "served_by": api.call("POST", "/v1/classify", json={
            "model": "sentiment", "input": rows[0]["text"]})["model"]}


def test_shift_is_detected_retrained_promoted_and_rolled_back_on_bad_feedback(
        tmp_path, base_model_dir, ray_address, engine, engine_settings):
    from services.settings import Settings
    from tests.support.engine import serving_on
    from tuneloop.cli.demo import Story, run_story

    # The session's engine serves (tenant 'demo' is this test's alone); jobs, the gate and the
    # rollback all score there.
    settings = Settings(data_dir=tmp_path / "data", base_model=str(base_model_dir),
                        admin_key="admin-test-key", training_runner="local",
                        ray_address=ray_address, **serving_on(engine, engine_settings))
    began = time.monotonic()
    result = run_story(settings, Story(**SMALL), then=report_wrong_answers,
                       say=lambda line: print(f"[{time.monotonic() - began:5.0f} s] {line}"))
    print(f"loop test took {time.monotonic() - began:.0f} s; rollback feedback "
          f"{result.get('rollback_feedback')}")

    # the loop: drift -> policy -> retrain on the feedback -> gate -> promoted by hot swap
    run = result["run"]
    assert run["trigger"] in ("drift", "quality_drop"), run  # both fire after the shift
    assert run["champion_version"] == 1 and run["candidate_version"] == 2
    assert run["dataset"]["counts"]["from_label"] >= SMALL["min_new_labels"]
    assert run["dataset"]["counts"]["replay"] > 0
    evaluation = run["evaluation"]
    assert evaluation["split_sizes"]["new"] == run["dataset"]["eval"] >= 40
    assert evaluation["split_sizes"]["previous"] == SMALL["v1_valid"]
    assert run["gate"]["passed"] is True, run["gate"]
    assert run["status"] == "promoted"
    versions = {v["version"]: v for v in result["after_rollback"]["adapter"]["versions"]}
    for version in (1, 2):  # checked through the engine on what /v1/classify returns
        parity = versions[version]["metrics"]["parity"]
        assert parity["passed"] and parity["kind"] == "label_probabilities", parity
        # the job's own held-out evaluation ran on the engine too
        assert versions[version]["metrics"]["eval"]["adapter"]["scorer"] == "engine"
        print(f"v{version} parity: largest label-probability difference "
              f"{parity['largest_difference']:.4f}")
    assert result["champion"] == "sentiment@v2" and result["served_by"] == "sentiment@v2"
    # ... and v2 is really better where the traffic went (150 fresh texts served by the engine,
    # never seen in training), not worse than the tolerance where it came from (v1's 100
    # held-out texts, scored by the gate)
    served = result["served"]
    assert len(result["probe_rows"]["new"]) == 150
    assert served["v2"]["new"] - served["v1"]["new"] >= CLEAR_GAIN, served
    old_loss = evaluation["v1"]["previous"]["accuracy"] - evaluation["v2"]["previous"]["accuracy"]
    assert old_loss <= SMALL["gate_tolerance"], evaluation

    # rollback: v2's fresh labeled feedback is much worse than at its promotion
    assert result["rollback_feedback"]["labels"] >= 30, result["rollback_feedback"]
    after = result["after_rollback"]
    assert after["adapter"]["champion"] == "sentiment@v1", after["events"]
    assert after["served_by"] == "sentiment@v1"  # hot-swapped back on the engine
    rollback = after["events"][0]
    assert rollback["action"] == "rollback" and rollback["reason"] == "quality_drop"
    assert "accuracy dropped significantly" in rollback["message"]
    assert after["retrains"][0]["status"] == "rolled_back"
