"""Data for the console's pages, made by the functions that make it in production (evaluation
metrics, the gate, drift and quality reports), written where the job manager and the monitor
write it: an adapter with two trained versions, a policy, drift windows and events, a retrain and
a running job with loss points."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

from monitoring import monitor_store as ms
from monitoring.drift import prediction_drift
from monitoring.quality import Baseline, quality_report
from services import registry
from services.adapter_intake import register_adapter_dir
from services.store.models import JobStatus, RetrainRunStatus, utcnow
from services.tenants import get_tenant
from tests.support.api import classification_lines
from tests.tuneloop.ui.conftest import LiveServer
from training.evaluation import classification_metrics
from training.gate import decide_gate
from training.jobs import store as job_store
from training.jobs.states import EventType

LABELS = ["billing", "bug", "praise"]
WINDOWS = 12


def _predictions(rng: random.Random, n: int, accuracy: float) -> tuple[list[str], list[str]]:
    """n references and predictions, exactly ``accuracy`` of them right."""
    truth = [LABELS[i % len(LABELS)] for i in range(n)]
    right = set(rng.sample(range(n), round(n * accuracy)))
    return truth, [t if i in right else rng.choice([x for x in LABELS if x != t])
                   for i, t in enumerate(truth)]


def job_metrics(rng: random.Random, accuracy: float, champion: dict | None, job_id: str) -> dict:
    """A classification version's metrics as training/jobs/publish.py stores them."""
    adapter = classification_metrics(*_predictions(rng, 90, accuracy), LABELS)
    base = classification_metrics(*_predictions(rng, 90, 0.4), LABELS)
    gate = decide_gate({"held_out": adapter}, {"held_out": champion} if champion else None,
                       "held_out", metric="accuracy", higher_is_better=True,
                       base={"held_out": base},
                       champion_version="intent@v1" if champion else None)
    evaluation = {"adapter": adapter, "base": base}
    if champion:
        evaluation["champion"] = {**champion, "version": "intent@v1"}
    return {"eval": evaluation, "train": {"train_loss": round(0.9 - accuracy / 2, 4), "steps": 40},
            "gate": gate.to_dict(), "job_id": job_id, "wall_time_s": 41.5}


def train_step(server: LiveServer, job_id: str, step: int, total: int, loss: float) -> None:
    """What the job manager records for a step of a real run (training/jobs/execute.py)."""
    with server.platform.store.write() as session:
        job = job_store.get_job(session, None, job_id)
        if job.status != JobStatus.RUNNING:
            job_store.transition(session, job, JobStatus.RUNNING, owner="console-test")
        job_store.heartbeat(session, job_id, "console-test",
                            progress={"step": step, "total_steps": total, "loss": loss})
        job_store.add_event(session, job_id, EventType.METRICS, f"Step {step}/{total}",
                            {"step": step, "total_steps": total, "train_loss": loss})


def create_job(server: LiveServer, headers: dict, suffix: str) -> tuple[str, str]:
    """(file id, job id) of a classification job, once the manager has validated it."""
    r = server.http.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                         files={"file": (f"{suffix}.jsonl", classification_lines(40))})
    assert r.status_code == 200, r.text
    file_id = r.json()["id"]
    r = server.http.post("/v1/fine_tuning/jobs", headers=headers, json={
        "model": "base", "training_file": file_id, "suffix": suffix, "task": "classification"})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    for _ in range(600):
        if server.http.get(f"/v1/fine_tuning/jobs/{job_id}",
                           headers=headers).json()["status"] == "queued":
            return file_id, job_id
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} was not validated")


HELPDESK_SAMPLES = [
    {"prompt": "How do I reset my password?",
     "reference": "Open Settings > Security and choose Reset password.",
     "candidate": "Go to Settings > Security, then Reset password."},
    {"prompt": "Can I get a refund after 30 days?",
     "reference": "Refunds are possible within 30 days of purchase.",
     "candidate": "Refunds are only possible within 30 days."},
]


def seed(server: LiveServer, headers: dict, adapter_dir: Path) -> dict:
    """Tenant acme (``headers``) gets classification adapter "intent" (v1, then v2 promoted),
    drift windows, a policy, monitor events, a retrain, a running job "intent-next" with loss
    points, and chat adapter "helpdesk" (one trained version)."""
    rng = random.Random(7)
    p = server.platform
    file_id, job_id = create_job(server, headers, "intent-next")
    for step, loss in enumerate((2.4, 1.9, 1.5, 1.2, 1.05, 0.97), start=1):
        train_step(server, job_id, step, 10, loss)
    lineage = {"source": "fine_tuning_job", "job_id": job_id,
               "training_file": {"id": file_id, "filename": "intent.jsonl", "examples": 40}}
    v1 = job_metrics(rng, 0.72, None, job_id)
    register_adapter_dir(p, "acme", "intent", adapter_dir, task="classification", labels=LABELS,
                         metrics=v1, lineage=lineage)
    register_adapter_dir(p, "acme", "intent", adapter_dir, task="classification", labels=LABELS,
                         metrics=job_metrics(rng, 0.86, v1["eval"]["adapter"], job_id),
                         lineage={**lineage, "parent_version": "intent@v1"})
    r = server.http.post("/v1/adapters/intent/promote", headers=headers,
                         json={"version": 2, "reason": "gate passed"})
    assert r.status_code == 200, r.text
    register_adapter_dir(p, "acme", "helpdesk", adapter_dir, metrics={
        "eval": {"adapter": {"eval_loss": 1.21, "perplexity": 3.35, "eval_tokens": 5120,
                             "examples": 20, "exact_match": 0.15, "rouge_l": 0.41,
                             "samples": HELPDESK_SAMPLES},
                 "base": {"eval_loss": 1.87, "perplexity": 6.49, "eval_tokens": 5120,
                          "examples": 20, "exact_match": 0.0, "rouge_l": 0.22}},
        "gate": decide_gate({"held_out": {"eval_loss": 1.21}}, None, "held_out",
                            metric="eval_loss", base={"held_out": {"eval_loss": 1.87}}).to_dict()})
    r = server.http.put("/v1/adapters/intent/policy", headers=headers,
                        json={"schedule_hours": 24, "cooldown_hours": 2})
    assert r.status_code == 200, r.text

    now = utcnow()
    with p.store.write() as session:
        adapter = registry.get_adapter(session, get_tenant(session, "acme"), "intent")
        for i in range(WINDOWS):
            at = now - timedelta(hours=(WINDOWS - i) * 6)
            shift = max(0, i - 7) * 0.12  # the last windows drift
            reference = {"billing": 60, "bug": 60, "praise": 60}
            window = {"billing": int(60 + 200 * shift), "bug": 60, "praise": int(60 - 100 * shift)}
            pred = prediction_drift(reference, window).to_dict()
            p_input = 0.4 * 10 ** (-6 * shift) if shift else 0.3 + 0.05 * (i % 4)
            input_drift = {"statistic": round(0.002 + 0.03 * shift, 5), "p_value": p_input,
                           "threshold": 0.01, "drifted": p_input < 0.01, "n_reference": 400,
                           "n_window": 180, "method": "mmd-linear-tfidf-permutation",
                           "status": "drift" if p_input < 0.01 else "no_drift", "details": {}}
            counts = {"labeled": 20 + 10 * i, "rated": 30 + 8 * i,
                      "negative": 2 + i + int(40 * shift)}
            counts["correct"] = round(counts["labeled"] * (0.86 - 0.4 * shift))
            quality = quality_report(**counts, baseline_accuracy=Baseline(0.86, 90),
                                     baseline_negative_rate=Baseline(0.08, None))
            summary = {**quality.to_dict(), "counts": counts}
            drifted = input_drift["drifted"] or pred["drifted"]
            ms.add_report(session, adapter.id, version=2, new_window=True, drifted=drifted,
                          n_window=180, window_end=at, input_drift=input_drift,
                          prediction_drift=pred, quality=summary, created_at=at)
        ms.add_event(session, adapter.id, ms.EventType.DECISION, "drift in 2 of the last 3 "
                     "windows: retrain", action="retrain", reason="drift", now=now)
        ms.add_event(session, adapter.id, ms.EventType.GATE, "intent@v3 vs intent@v2: failed "
                     "(accuracy on 'new': candidate 0.84 vs champion 0.86)", action="failed",
                     reason="no_improvement", now=now)
        ms.add_run(session, adapter_id=adapter.id, tenant_id=adapter.tenant_id,
                   status=RetrainRunStatus.REJECTED, trigger="drift", champion_version=2,
                   job_id=job_id, dataset_version="ds-" + "3f9a" * 10, dataset={},
                   training_file=file_id, validation_file=file_id, candidate_version=None,
                   gate=decide_gate({"new": {"accuracy": 0.84}}, {"new": {"accuracy": 0.86}},
                                    "new", metric="accuracy", min_improvement=0.0).to_dict(),
                   created_at=now)
    return {"job_id": job_id, "file_id": file_id}
