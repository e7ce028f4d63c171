"""The official openai client fine-tunes a real classification adapter through tuneloop: upload,
create a job, poll to ``succeeded``, get ``fine_tuned_model`` (real Ray, the real base model)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytestmark = [pytest.mark.integration, pytest.mark.ray]

DATA = Path(__file__).resolve().parents[2] / "data" / "vader_sentiment" / "vader_sentiment.jsonl"
ADMIN = {"Authorization": "Bearer admin-test-key"}


def sentiment_files(tmp_path: Path, per_train: int = 12, per_eval: int = 5) -> tuple[Path, Path]:
    """Short real texts with their human sentiment label: a training and a held-out file."""
    seen: Counter[str] = Counter()
    train, held_out = [], []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if len(row["text"]) > 70:
            continue
        example = json.dumps({"text": row["text"], "label": row["label"]}) + "\n"
        if seen[row["label"]] < per_train:
            train.append(example)
        elif seen[row["label"]] < per_train + per_eval:
            held_out.append(example)
        seen[row["label"]] += 1
    (tmp_path / "train.jsonl").write_text("".join(train), encoding="utf-8")
    (tmp_path / "valid.jsonl").write_text("".join(held_out), encoding="utf-8")
    return tmp_path / "train.jsonl", tmp_path / "valid.jsonl"


def test_openai_client_fine_tunes_a_classifier(ray_cluster, base_model_dir, tmp_path):
    import openai

    from services.app import create_app
    from services.settings import Settings

    settings = Settings(data_dir=tmp_path / "data", base_model=str(base_model_dir),
                        admin_key="admin-test-key", base_model_name="base",
                        training_runner="local", ray_address=ray_cluster, train_workers=1)
    train_path, valid_path = sentiment_files(tmp_path)
    began = time.monotonic()
    with TestClient(create_app(settings)) as http:
        assert http.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN).status_code == 201
        key = http.post("/admin/tenants/acme/keys", headers=ADMIN).json()["key"]
        client = openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http,
                               max_retries=0)
        with open(train_path, "rb") as fh:
            training = client.files.create(file=fh, purpose="fine-tune")
        with open(valid_path, "rb") as fh:
            validation = client.files.create(file=fh, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="base", training_file=training.id, validation_file=validation.id,
            suffix="sentiment", seed=0,
            hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
            extra_body={"task": "classification",
                        "hyperparameters": {"n_epochs": 1, "batch_size": 4,
                                            "learning_rate_multiplier": 10, "max_length": 128,
                                            "checkpoint_every": 5}})
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() - began < 600, job
            time.sleep(2)
            job = client.fine_tuning.jobs.retrieve(job.id)
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
        assert job.status == "succeeded", (job.error, [e.message for e in events[:5]])
        assert job.fine_tuned_model == "sentiment@v1"
        assert job.trained_tokens and job.trained_tokens > 0

        types = [e.type for e in reversed(events)]
        assert types[:3] == ["created", "validated", "started"]
        assert types[-3:] == ["evaluated", "published", "succeeded"]
        steps = [e for e in events if e.type == "metrics"]
        assert len(steps) == 9 and all(e.data["train_loss"] > 0 for e in steps)
        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        assert [c.step_number for c in checkpoints] == [9, 5]

        adapter = http.get("/v1/adapters/sentiment",
                           headers={"Authorization": f"Bearer {key}"}).json()
        version = adapter["versions"][0]
        assert version["labels"] == ["negative", "neutral", "positive"]
        assert version["lineage"]["training_file"]["sha256"] == training.sha256
        assert version["lineage"]["validation_file"]["id"] == validation.id
        accuracy = version["metrics"]["eval"]["adapter"]["accuracy"]
        base_accuracy = version["metrics"]["eval"]["base"]["accuracy"]
        print(f"\nheld-out accuracy: adapter {accuracy:.3f}, base {base_accuracy:.3f}; "
              f"job took {time.monotonic() - began:.0f} s")
        assert 0.0 <= accuracy <= 1.0
