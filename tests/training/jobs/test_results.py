"""The result file's CSV from a job's metrics events: OpenAI's header, one row per step, empty
cells for what is unknown (no store, no server)."""

from __future__ import annotations

import csv
import io

from training.jobs.results import COLUMNS, metrics_csv


def rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_one_row_per_step_with_empty_cells_for_unknown_values():
    data = metrics_csv([
        {"step": 1, "total_steps": 3, "train_loss": 2.5, "tokens_per_s": 50.0},
        {"step": 2, "total_steps": 3, "train_loss": 1.0 / 3, "valid_loss": 1.25},
        {"step": 3, "total_steps": 3, "train_loss": None},
    ])
    assert data.decode().splitlines()[0] == ",".join(COLUMNS)
    assert rows(data) == [
        {"step": "1", "train_loss": "2.5", "train_accuracy": "", "valid_loss": "",
         "valid_mean_token_accuracy": ""},
        {"step": "2", "train_loss": repr(1.0 / 3), "train_accuracy": "", "valid_loss": "1.25",
         "valid_mean_token_accuracy": ""},
        {"step": "3", "train_loss": "", "train_accuracy": "", "valid_loss": "",
         "valid_mean_token_accuracy": ""},
    ]
    assert float(rows(data)[1]["train_loss"]) == 1.0 / 3  # exact round trip


def test_a_step_recorded_again_by_a_resumed_run_keeps_its_last_record_in_step_order():
    data = metrics_csv([{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 9.0},
                        {"step": 2, "train_loss": 1.0}, {"step": 3, "train_loss": float("nan")},
                        {"train_loss": 5.0}])
    assert [(r["step"], r["train_loss"]) for r in rows(data)] == [
        ("1", "2.0"), ("2", "1.0"), ("3", "")]


def test_no_steps_is_the_header_alone():
    assert metrics_csv([]) == (",".join(COLUMNS) + "\n").encode()
