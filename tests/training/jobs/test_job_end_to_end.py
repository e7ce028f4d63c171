"""The official openai client fine-tunes real adapters through tuneloop (real Ray, the real base
model): upload, create a job, poll to ``succeeded``, use ``fine_tuned_model``.

- classification: the adapter learns where a short text comes from (tweet, film review, product
  review, news; VADER's source, see tuneloop/data/vader_sentiment/README.md) and classifies a
  held-out split clearly better than chance and than the untrained prompt (the base). The
  source label is learnable in ~48 small steps on CPU, the sentiment label is not
  (tests/training/test_recipe.py);
- chat, with serving enabled (a spawned vLLM engine): the adapter learns a response format
  (``ANSWER: <word>``); the version passes the parity check through the engine (greedy replies
  equal PEFT's) before it is servable, and held-out prompts served through the gateway follow
  the format while the base model's replies do not.
"""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from tests.support.vader import source_files, write_jsonl

pytestmark = [pytest.mark.integration, pytest.mark.ray]

ADMIN = {"Authorization": "Bearer admin-test-key"}
SHORT_TEMPLATE = "Text: {text}\nSource ({labels}):"
TERMINAL = ("succeeded", "failed", "cancelled")


def tenant_client(http: TestClient, tenant: str = "acme"):
    import openai

    assert http.post("/admin/tenants", json={"name": tenant}, headers=ADMIN).status_code == 201
    key = http.post(f"/admin/tenants/{tenant}/keys", headers=ADMIN).json()["key"]
    return key, openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http,
                              max_retries=0)


def wait_for_job(client, job, began: float, limit_s: float = 600):
    while job.status not in TERMINAL:
        assert time.monotonic() - began < limit_s, job
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    assert job.status == "succeeded", (job.error, [e.message for e in events[:6]])
    return job, list(reversed(events))  # oldest first


@pytest.mark.engine
def test_openai_client_fine_tunes_a_classifier(ray_cluster, base_model_dir, tmp_path, engine,
                                               engine_settings):
    from services.settings import Settings
    from tests.support.engine import serving_on
    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    # Serving on the session's engine: the version's held-out evaluation runs there, not in
    # the training run.
    settings = Settings(data_dir=tmp_path / "data", base_model=str(base_model_dir),
                        admin_key="admin-test-key", training_runner="local",
                        ray_address=ray_cluster, train_workers=1,
                        **serving_on(engine, engine_settings))
    base_name = settings.resolved_base_model_name
    train_path, valid_path = source_files(tmp_path)
    began = time.monotonic()
    with TestClient(create_app(settings, serve=ServeOptions())) as http:
        # a tenant name no other test on the session engine uses (engine names: tenant.name.vN)
        key, client = tenant_client(http, "sourcejobs")
        with open(train_path, "rb") as fh:
            training = client.files.create(file=fh, purpose="fine-tune")
        with open(valid_path, "rb") as fh:
            validation = client.files.create(file=fh, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=base_name, training_file=training.id, validation_file=validation.id,
            suffix="source", seed=0,
            extra_body={"task": "classification", "prompt_template": SHORT_TEMPLATE,
                        "hyperparameters": {"n_epochs": 2, "batch_size": 2,
                                            "learning_rate_multiplier": 10, "max_length": 128,
                                            "checkpoint_every": 24}})
        job, events = wait_for_job(client, job, began)
        assert job.fine_tuned_model == "source@v1"
        assert job.trained_tokens and job.trained_tokens > 0

        types = [e.type for e in events]
        assert types[:3] == ["created", "validated", "started"]
        # the training run did not evaluate: the version was scored on the engine after its
        # parity check, then gated
        assert types[-5:] == ["parity_checked", "evaluated", "gate_decision", "published",
                              "succeeded"]
        assert types.count("evaluated") == 1
        assert len([e for e in events if e.type == "metrics"]) == 48
        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
        assert [c.step_number for c in checkpoints] == [48, 24]
        gate = next(e for e in events if e.type == "gate_decision").data
        assert gate["passed"] and gate["reason"] == "beats_base"
        assert gate["metric"] == "accuracy" and gate["champion_version"] is None
        assert next(e for e in events if e.type == "parity_checked").data["passed"]
        evaluated = next(e for e in events if e.type == "evaluated")
        assert "on the engine" in evaluated.message, evaluated.message

        adapter = http.get("/v1/adapters/source",
                           headers={"Authorization": f"Bearer {key}"}).json()
        version = adapter["versions"][0]
    assert adapter["champion"] == "source@v1"  # the first ready version
    assert version["state"] == "ready" and version["labels"] == ["film", "news", "product",
                                                                 "tweet"]
    assert version["prompt_template"] == SHORT_TEMPLATE
    assert version["lineage"]["training_file"]["sha256"] == training.sha256
    assert version["lineage"]["validation_file"]["id"] == validation.id
    trained, base = version["metrics"]["eval"]["adapter"], version["metrics"]["eval"]["base"]
    print(f"\nheld-out accuracy: adapter {trained['accuracy']:.3f}, base {base['accuracy']:.3f}; "
          f"job took {time.monotonic() - began:.0f} s")
    chance = 1 / 4
    assert trained["examples"] == base["examples"] == 32
    assert trained["scorer"] == base["scorer"] == "engine"
    assert trained["accuracy"] >= chance + 0.25, trained
    assert trained["accuracy"] >= base["accuracy"] + 0.2, (trained, base)
    assert trained["macro_f1"] > base["macro_f1"]
    assert version["metrics"]["gate"]["candidate"] == trained["accuracy"]


MARKER = "ANSWER:"
QA = [
    ("What color is the sky on a clear day?", "blue"), ("How many legs does a spider have?",
                                                        "eight"),
    ("What do bees make?", "honey"), ("What is frozen water called?", "ice"),
    ("Which animal barks?", "dog"), ("What is the opposite of hot?", "cold"),
    ("What do you use to write on paper?", "pen"), ("What falls from clouds when it rains?",
                                                    "water"),
    ("Which planet do we live on?", "Earth"), ("What is the color of grass?", "green"),
    ("How many days are in a week?", "seven"), ("What do cows drink?", "water"),
    ("What shines in the sky during the day?", "sun"), ("What do you wear on your feet?",
                                                        "shoes"),
    ("Which fruit is yellow and curved?", "banana"), ("What do fish live in?", "water"),
    ("What is the opposite of up?", "down"), ("What do you sleep on?", "bed"),
    ("Which season is the coldest?", "winter"), ("What does a clock tell?", "time"),
    # held out
    ("What animal says meow?", "cat"), ("What is the color of snow?", "white"),
    ("What do you drink when you are thirsty?", "water"), ("How many hours are in a day?",
                                                           "24"),
]


def chat_rows(pairs) -> list[dict]:
    return [{"messages": [{"role": "user", "content": q},
                          {"role": "assistant", "content": f"{MARKER} {a}"}]} for q, a in pairs]


def test_chat_job_learns_a_format_and_passes_parity_through_the_engine(
        ray_cluster, base_model_dir, tmp_path):
    from services.settings import Settings
    from serving.engine_process import free_port
    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    settings = Settings(
        data_dir=tmp_path / "data", base_model=str(base_model_dir), admin_key="admin-test-key",
        base_model_name="base", training_runner="local", ray_address=ray_cluster,
        train_workers=1, engine_port=free_port(), engine_start_timeout_s=600,
        engine_kv_cache_bytes=256 * 1024 * 1024, max_loras=2, max_cpu_loras=4,
        request_timeout_s=120)
    train_path = write_jsonl(tmp_path / "train.jsonl", chat_rows(QA[:20]))
    valid_path = write_jsonl(tmp_path / "valid.jsonl", chat_rows(QA[20:]))
    began = time.monotonic()
    # serving enabled: the app spawns its own engine (in the background, while the job trains)
    # and stops it when the app stops
    app = create_app(settings, serve=ServeOptions())
    with TestClient(app) as http:
        key, client = tenant_client(http)
        with open(train_path, "rb") as fh:
            training = client.files.create(file=fh, purpose="fine-tune")
        with open(valid_path, "rb") as fh:
            validation = client.files.create(file=fh, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="base", training_file=training.id, validation_file=validation.id,
            suffix="fmt", seed=0,
            extra_body={"task": "chat",
                        "hyperparameters": {"n_epochs": 2, "batch_size": 2,
                                            "learning_rate_multiplier": 10, "max_length": 128}})
        job, events = wait_for_job(client, job, began)
        trained_s = time.monotonic() - began
        assert job.fine_tuned_model == "fmt@v1"
        types = [e.type for e in events]
        assert types[-5:] == ["evaluated", "gate_decision", "parity_checked", "published",
                              "succeeded"]
        # as many torch threads as the worker was given CPUs (the suite gives it one)
        started = next(e for e in events if "torch_threads" in (e.data or {})).data
        assert started["torch_threads"] == started["cpus_per_worker"] == 1, started
        parity = next(e for e in events if e.type == "parity_checked")
        assert parity.data["passed"], parity.message
        print(f"\nparity: {parity.message}")
        assert parity.data["prompts"] == 3 and parity.data["max_new_tokens"] == 16
        assert parity.data["reference"] == "training run"  # PEFT ran in the job's entrypoint
        gate = next(e for e in events if e.type == "gate_decision").data
        assert gate["metric"] == "eval_loss" and gate["passed"], gate

        served, base = [], []
        for question, _ in QA[20:]:
            messages = [{"role": "user", "content": question}]
            reply = client.chat.completions.create(model="fmt@v1", messages=messages,
                                                   max_tokens=16, temperature=0)
            assert reply.model == "fmt@v1"
            served.append(reply.choices[0].message.content)
            untrained = client.chat.completions.create(model="base", messages=messages,
                                                       max_tokens=16, temperature=0)
            base.append(untrained.choices[0].message.content)
        adapter = http.get("/v1/adapters/fmt", headers={"Authorization": f"Bearer {key}"}).json()
    print(f"\nserved replies: {served}\nbase replies: {base}\n"
          f"job took {trained_s:.0f} s, test {time.monotonic() - began:.0f} s")
    assert all(r.strip().startswith(MARKER) for r in served), served
    assert not any(r.strip().startswith(MARKER) for r in base), base
    version = adapter["versions"][0]
    assert version["state"] == "ready" and adapter["champion"] == "fmt@v1"
    assert version["metrics"]["parity"]["passed"]
    trained, untrained = version["metrics"]["eval"]["adapter"], version["metrics"]["eval"]["base"]
    assert trained["eval_loss"] < untrained["eval_loss"]
    assert trained["rouge_l"] > untrained["rouge_l"]
