"""The deterministic data schedule and the training config."""

from __future__ import annotations

import pytest

from training.config import TrainConfig
from training.errors import TrainConfigError
from training.schedule import plan_steps

LENGTHS = [5, 30, 7, 12, 40, 3, 9, 22, 16, 8]


def plan(**kwargs):
    args = {"epochs": 2, "batch_size": 2, "grad_accum": 1, "packing": False, "max_length": 64,
            "seed": 1}
    args.update(kwargs)
    return plan_steps(LENGTHS, **args)


def flat(steps):
    return [i for step in steps for mb in step for unit in mb for i in unit]


def test_same_seed_same_plan_other_seed_other_order():
    assert plan() == plan()
    assert plan() != plan(seed=2)


def test_every_example_once_per_epoch():
    steps = plan(epochs=1)
    assert sorted(flat(steps)) == list(range(len(LENGTHS)))
    assert sorted(flat(plan(epochs=3))) == sorted(list(range(len(LENGTHS))) * 3)


def test_packing_fills_rows_without_exceeding_max_length():
    steps = plan(epochs=1, packing=True, batch_size=1)
    rows = [unit for step in steps for mb in step for unit in mb]
    assert all(sum(LENGTHS[i] for i in row) <= 64 for row in rows)
    assert len(rows) < len(LENGTHS)
    assert sorted(flat(steps)) == list(range(len(LENGTHS)))


def test_ranks_get_disjoint_shards_and_equal_step_counts():
    r0 = plan(epochs=1, batch_size=5, world_size=2, rank=0)
    r1 = plan(epochs=1, batch_size=5, world_size=2, rank=1)
    assert len(r0) == len(r1)
    assert sorted(flat(r0) + flat(r1)) == list(range(len(LENGTHS)))
    # 10 examples, batch 3 -> 4 micro-batches; 3 ranks -> padded to 6 by cycling
    counts = [len(plan(epochs=1, batch_size=3, world_size=3, rank=r)) for r in range(3)]
    assert counts == [2, 2, 2]


def test_grad_accum_and_max_steps():
    steps = plan(epochs=1, grad_accum=2)
    assert [len(s) for s in steps] == [2, 2, 1]
    assert len(plan(max_steps=3)) == 3


def test_config_validates_and_round_trips(tmp_path):
    config = TrainConfig(base_model="m", output_dir=str(tmp_path), train_file="t.jsonl")
    assert config.base_model.startswith("/")  # made absolute for Ray workers
    path = tmp_path / "c.json"
    config.to_json(path)
    assert TrainConfig.from_json(path) == config
    other = TrainConfig(base_model="m", output_dir=str(tmp_path), train_file="t.jsonl")
    assert other.run_name != config.run_name


def test_config_errors_name_the_field_and_the_fix(tmp_path):
    with pytest.raises(TrainConfigError, match="qlora=true needs use_gpu=true"):
        TrainConfig(base_model="m", output_dir=str(tmp_path), train_file="t", qlora=True)
    with pytest.raises(TrainConfigError, match="batch_size=0 must be >= 1"):
        TrainConfig(base_model="m", output_dir=str(tmp_path), train_file="t", batch_size=0)
    with pytest.raises(TrainConfigError, match="give train_file or train_examples"):
        TrainConfig(base_model="m", output_dir=str(tmp_path))
    with pytest.raises(TrainConfigError, match=r"\{text\}"):
        TrainConfig(base_model="m", output_dir=str(tmp_path), train_file="t",
                    task="classification", prompt_template="no slot")
    with pytest.raises(TrainConfigError, match="unknown training config field"):
        TrainConfig.from_dict({"base_model": "m", "output_dir": "o", "train_file": "t",
                               "epochz": 3})
