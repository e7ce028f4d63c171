"""The recipe end to end with real Ray and the real default model (kept tiny: CPU only).

- a classification adapter trained on a few dozen real texts beats the untrained prompt on a
  held-out split;
- a 2-worker run, driven by the local runner through ``python -m training.recipe``, survives a
  killed worker: it resumes from the last checkpoint, replays the lost step identically and
  finishes;
- a bad dataset fails before any training, with line numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.vader import source_examples
from training.config import TrainConfig
from training.errors import DatasetError
from training.progress import read_events
from training.recipe import auto_cpus_per_worker, run_training, torch_threads, worker_cpus
from training.runners.base import RunSpec, RunState
from training.runners.local import LocalRayRunner, recipe_entrypoint

SHORT_TEMPLATE = "Text: {text}\nSource ({labels}):"


def test_auto_cpus_per_worker_shares_the_cluster_within_a_node():
    assert auto_cpus_per_worker([2.0], 1) == 2.0  # the embedded default: every core
    assert auto_cpus_per_worker([16.0], 2) == 8.0
    assert auto_cpus_per_worker([2.0], 3) == 1.0  # never below one
    assert auto_cpus_per_worker([8.0, 8.0], 1) == 8.0  # a worker runs on one node
    assert auto_cpus_per_worker([8.0, 4.0], 4) == 3.0
    assert torch_threads(2.5) == 2 and torch_threads(0.5) == 1
    assert torch_threads(None) >= 1


@pytest.mark.integration
@pytest.mark.ray
def test_a_ray_worker_uses_the_cpus_it_was_given(ray_cluster):
    import ray

    @ray.remote
    def threads() -> tuple[float | None, int]:
        import torch

        torch.set_num_threads(torch_threads(worker_cpus()))  # what train_worker does
        return worker_cpus(), torch.get_num_threads()

    assert worker_cpus() is None  # the driver holds no CPUs
    assert ray.get(threads.options(num_cpus=2).remote()) == (2.0, 2)
    assert ray.get(threads.options(num_cpus=1).remote()) == (1.0, 1)


@pytest.mark.integration
@pytest.mark.ray
def test_classification_adapter_beats_the_untrained_prompt(ray_cluster, base_model_dir, tmp_path):
    train, held_out = source_examples(per_train=12, per_eval=8)
    config = TrainConfig(
        base_model=str(base_model_dir), output_dir=str(tmp_path / "out"), task="classification",
        train_examples=train, eval_examples=held_out, prompt_template=SHORT_TEMPLATE,
        epochs=2, batch_size=2, learning_rate=2e-3, seed=0, packing=False, max_length=128,
        cpus_per_worker=1, progress_file=str(tmp_path / "progress.jsonl"),
    )
    result = run_training(config)

    adapter, base = result.metrics["eval"]["adapter"], result.metrics["eval"]["base"]
    print(f"held-out accuracy: adapter {adapter['accuracy']:.3f}, base {base['accuracy']:.3f}")
    chance = 1 / 4
    assert adapter["examples"] == base["examples"] == 32
    assert adapter["accuracy"] >= base["accuracy"] + 0.2, (adapter["accuracy"], base["accuracy"])
    assert adapter["accuracy"] >= chance + 0.25
    assert adapter["macro_f1"] > base["macro_f1"]
    assert set(adapter["confusion"]) == {"film", "news", "product", "tweet"}

    assert sorted(p.name for p in result.adapter_dir.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8
    assert {"q_proj", "v_proj", "down_proj"} <= set(adapter_config["target_modules"])
    saved = json.loads(result.metrics_path.read_text())
    assert saved["labels"] == ["film", "news", "product", "tweet"]
    assert saved["prompt_template"] == SHORT_TEMPLATE
    assert saved["datasets"]["train"]["label_counts"] == {
        "film": 12, "news": 12, "product": 12, "tweet": 12}
    assert saved["train"]["step"] == saved["train"]["total_steps"] == 48

    events = read_events(tmp_path / "progress.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "succeeded"
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 49))
    assert all(e["tokens_per_s"] > 0 and e["total_steps"] == 48 for e in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]


CHAT = [
    {"messages": [{"role": "user", "content": f"Say the word {w}."},
                  {"role": "assistant", "content": f"WORD: {w.upper()}"}]}
    for w in ["apple", "river", "stone", "cloud", "green", "paper", "light", "table",
              "music", "bread"]
]


@pytest.mark.integration
@pytest.mark.ray
def test_two_workers_resume_after_a_killed_worker(ray_cluster, base_model_dir, tmp_path):
    progress_file = tmp_path / "progress.jsonl"
    config = TrainConfig(
        base_model=str(base_model_dir), output_dir=str(tmp_path / "out"), task="chat",
        train_examples=CHAT[:8], eval_examples=CHAT[8:], epochs=1, batch_size=1,
        learning_rate=1e-3, num_workers=2, cpus_per_worker=1, checkpoint_every=1,
        crash_at_step=2, max_failures=2, compare_base=False, max_new_tokens=12,
        progress_file=str(progress_file),
    )
    config.to_json(tmp_path / "config.json")
    runner = LocalRayRunner(tmp_path / "logs", ray_address=ray_cluster)
    try:
        runner.submit(RunSpec(job_id="two-workers", entrypoint=recipe_entrypoint(
            tmp_path / "config.json"), num_workers=2))
        status = runner.wait("two-workers", timeout_s=540)
    finally:
        runner.close()
    assert status.state is RunState.SUCCEEDED, runner.log_tail("two-workers")

    events = read_events(progress_file)
    started = [e for e in events if e["event"] == "training_started"]
    assert started[0]["num_workers"] == 2 and started[0]["total_steps"] == 4  # 8 examples / 2
    steps = [e for e in events if e["event"] == "step"]
    # One worker died right after step 2, before its checkpoint. The group restarts from the
    # latest checkpoint Ray had committed (step 1, or none if the worker died before Ray took
    # it in) and replays from there.
    resumed = [e["step"] for e in events if e["event"] == "resumed"]
    assert resumed in ([], [1])
    numbers = [e["step"] for e in steps]
    assert numbers[:2] == [1, 2] and numbers[-3:] == [2, 3, 4]
    assert len(numbers) == 2 + (4 - (resumed[0] if resumed else 0))
    # Deterministic replay: a step run twice gives the same loss, bit for bit in practice.
    by_step: dict[int, list[float]] = {}
    for e in steps:
        by_step.setdefault(e["step"], []).append(e["loss"])
    assert by_step[2][0] == pytest.approx(by_step[2][1], rel=1e-6)
    for losses in by_step.values():
        assert losses == pytest.approx([losses[0]] * len(losses), rel=1e-6)

    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    assert [e["step"] for e in checkpoints][-3:] == [2, 3, 4]
    assert Path(checkpoints[-1]["path"], "adapter_model.safetensors").exists()

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["train"]["step"] == 4
    assert metrics["hyperparameters"]["num_workers"] == 2
    chat_eval = metrics["eval"]["adapter"]
    assert chat_eval["examples"] == 2 and 0.0 <= chat_eval["rouge_l"] <= 1.0
    assert chat_eval["eval_loss"] > 0 and chat_eval["perplexity"] > 1
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()


def test_bad_dataset_fails_before_training_with_line_numbers(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"text": "fine", "label": "a"}\n{"text": "", "label": "b"}\nnot json\n')
    config = TrainConfig(base_model=str(tmp_path / "unused"), output_dir=str(tmp_path / "out"),
                         task="classification", train_file=str(bad),
                         progress_file=str(tmp_path / "progress.jsonl"))
    with pytest.raises(DatasetError) as caught:
        run_training(config)
    assert [i.line for i in caught.value.issues] == [None, 2, 3]  # None: only one label left
    failed = read_events(tmp_path / "progress.jsonl")[-1]
    assert failed["event"] == "failed" and "line 2: empty text" in failed["reason"]


def test_a_worker_on_another_node_gets_the_warm_start_adapter_with_its_examples(
        peft_adapter, tmp_path):
    from training.recipe import _parent_files, _with_parent_here

    config = TrainConfig(base_model=str(tmp_path), output_dir=str(tmp_path / "out"),
                         train_examples=[{"text": "a", "label": "x"}],
                         parent_adapter=str(peft_adapter))
    files = _parent_files(config)  # what the driver ships in the workers' payload
    assert set(files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert _with_parent_here(config, files) == config  # the driver's node: its own copy
    elsewhere = TrainConfig.from_dict({**config.to_dict(),
                                       "parent_adapter": str(tmp_path / "not-on-this-node")})
    here = Path(_with_parent_here(elsewhere, files).parent_adapter)
    assert here.is_dir() and here != peft_adapter
    for name, data in files.items():
        assert (here / name).read_bytes() == data == (Path(peft_adapter) / name).read_bytes()
