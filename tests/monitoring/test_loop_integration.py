"""The whole loop, real: the gateway with a spawned vLLM engine, Ray training, the monitor thread,
real human-labeled texts (tests/data/vader_sentiment). v1 learns sentiment on tweets and movie
reviews; the traffic shifts to editorials and product reviews; labels arrive as feedback; the
monitor detects the drift; the policy starts a retrain; the candidate passes the gate and is
hot-swapped in; its accuracy on the shifted data is clearly higher and on the old data within
tolerance. This is ``tuneloop demo`` at a small size, so the demo is tested too.
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.engine, pytest.mark.slow]

SMALL = {"v1_train": 80, "v1_valid": 50, "old_traffic": 50, "new_traffic": 200, "chunk": 50,
         "min_new_labels": 150, "probe": 40, "window_size": 100, "monitor_interval_s": 2.0,
         "gate_tolerance": 0.05, "gate_min_improvement": 0.05,
         "hyperparameters": {"n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5,
                             "max_length": 96}}


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


def test_drift_retrains_and_promotes_a_better_adapter(tmp_path, base_model_dir, ray_address):
    from services.cli.demo import Story, run_story
    from services.settings import Settings
    from serving.engine_process import free_port

    settings = Settings(data_dir=tmp_path / "data", base_model=str(base_model_dir),
                        admin_key="admin-test-key", engine_port=free_port(),
                        engine_start_timeout_s=600, training_runner="local",
                        ray_address=ray_address)
    began = time.monotonic()
    result = run_story(settings, Story(**SMALL), say=print)
    print(f"loop test took {time.monotonic() - began:.0f} s")

    run = result["run"]
    assert run["trigger"] in ("drift", "quality_drop"), run
    assert run["status"] == "promoted", run["gate"]
    assert result["champion"] == "sentiment@v2" and result["served_by"] == "sentiment@v2"
    v1, v2 = run["evaluation"]["v1"], run["evaluation"]["v2"]
    # The gate's held-out splits: new = feedback examples never trained on, previous = v1's
    # validation file (old distribution).
    # (the gate: better by more than 0.05, at most 0.05 worse on the old split)
    assert v2["new"]["accuracy"] > v1["new"]["accuracy"] + 0.05, run["evaluation"]
    assert v2["previous"]["accuracy"] >= v1["previous"]["accuracy"] - 0.05, run["evaluation"]
    # Served by the engine on fresh texts: clearly better on the shifted data, the old data
    # within a tolerance that allows for 40-text noise.
    served = result["served"]
    assert served["v2"]["new"] > served["v1"]["new"], served
    assert served["v2"]["old"] >= served["v1"]["old"] - 0.15, served
