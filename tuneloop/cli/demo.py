"""``tuneloop demo``: the whole loop on real data, in one process, in a few minutes.

A sentiment classifier v1 is trained on tweets and movie reviews (human-labeled texts of the VADER
data set shipped in tuneloop/data/vader_sentiment). Traffic is served by the real gateway and vLLM
engine, then shifts to newspaper editorials and product reviews; users send the true labels as
feedback. The monitor finds the drift, the retrain policy starts a job warm-started from v1 on
the feedback (plus replayed v1 data), the gate compares v2 with v1 on held-out new and old data,
and v2 is promoted by hot swap. Everything runs on the embedded defaults (SQLite, local Ray,
a spawned engine) under its own data directory, so it never touches your store.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

DATA = Path(__file__).resolve().parents[1] / "data" / "vader_sentiment" / "vader_sentiment.jsonl"
OLD_DOMAINS = ("tweet", "movie_review")
NEW_DOMAINS = ("editorial", "product_review")


@dataclass(frozen=True)
class Story:
    """The sizes of the story (the defaults take ~10 minutes on 2 CPU cores)."""

    v1_train: int = 150
    v1_valid: int = 45
    old_traffic: int = 60
    new_traffic: int = 240
    labeled_share: float = 0.9
    chunk: int = 50
    probe: int = 60
    """Fresh held-out new-distribution texts, classified by v1 and v2 at the end."""
    probe_old: int | None = None
    """Fresh held-out old-distribution texts for the same (None: as many as ``probe``)."""
    min_new_labels: int = 150
    gate_tolerance: float = 0.05
    """Held-out sets of a few dozen texts move by 0.02-0.03 per text: allow a little noise."""
    gate_min_improvement: float = 0.0
    hyperparameters: dict[str, Any] = field(default_factory=lambda: {
        "n_epochs": 2, "batch_size": 8, "learning_rate_multiplier": 5, "max_length": 96})
    """v1's fine-tuning hyperparameters."""
    retrain_hyperparameters: dict[str, Any] | None = None
    """The retrain's (v2's) hyperparameters; None: the same as v1's."""
    eval_fraction: float = 0.2
    """Share of the feedback examples held out as the gate's new split."""
    monitor_interval_s: float = 3.0
    window_size: int = 100
    timeout_s: float = 1800.0


def load_rows(path: Path = DATA) -> tuple[list[dict], list[dict]]:
    """(old-domain rows, new-domain rows), each in a fixed pseudo-random order."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run the demo from a tuneloop checkout")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # Salted: the data set itself was selected by the unsalted hash, which orders by domain.
    rows.sort(key=lambda r: hashlib.sha256(b"tuneloop-demo\0" + r["text"].encode()).hexdigest())
    return ([r for r in rows if r["domain"] in OLD_DOMAINS],
            [r for r in rows if r["domain"] in NEW_DOMAINS])


def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n"
                   for r in rows).encode()


class _Api:
    """Small helpers over the in-process HTTP client; every error stops the story loudly."""

    def __init__(self, http: Any, key: str) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {key}"}

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        r = self.http.request(method, path, headers=self.headers, **kwargs)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
        return r.json()


def _wait(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _follow_job(api: _Api, job_id: str, say: Callable[[str], None], timeout_s: float) -> dict:
    last = None

    def done() -> dict | None:
        nonlocal last
        job = api.call("GET", f"/v1/fine_tuning/jobs/{job_id}")
        progress = job.get("progress") or {}
        line = f"    {job['status']}"
        if progress.get("total_steps"):
            line += f": step {progress.get('step', 0)}/{progress['total_steps']}"
            if progress.get("loss") is not None:
                line += f", loss {progress['loss']:.3f}"
        if line != last:
            say(line)
            last = line
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job = _wait(f"job {job_id}", done, timeout_s, every_s=2.0)
    if job["status"] != "succeeded":
        message = ((job.get("error") or {}).get("message") or "no reason given")[:600]
        raise RuntimeError(f"job {job_id} {job['status']}: {message}")
    return job


def _serve(api: _Api, rows: list[dict], model: str = "sentiment") -> list[dict]:
    """Classify every text (one request each, 8 at a time: the engine batches them):
    [{id, text, label, predicted}]."""

    def one(row: dict) -> dict:
        out = api.call("POST", "/v1/classify", json={"model": model, "input": row["text"]})
        return {"id": out["id"], "text": row["text"], "label": row["label"],
                "predicted": out["data"][0]["label"], "model": out["model"]}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, rows))


def _label(api: _Api, served: list[dict], share: float) -> int:
    """Users send the true label for a share of the responses (by hash: stable)."""
    picked = [s for s in served
              if int(hashlib.sha256(s["id"].encode()).hexdigest()[:8], 16) / 16**8 < share]
    for start in range(0, len(picked), 500):
        api.call("POST", "/v1/feedback", json={"data": [
            {"response_id": s["id"], "label": s["label"], "id": f"demo-{s['id']}"}
            for s in picked[start:start + 500]]})
    return len(picked)


def _accuracy(served: list[dict]) -> float:
    return sum(s["predicted"] == s["label"] for s in served) / max(1, len(served))


def _window_after(api: _Api, report_id: int) -> dict | None:
    body = api.call("GET", "/v1/adapters/sentiment/drift")
    window = body.get("window")
    return body if window and window["id"] > report_id else None


def _drift_line(body: dict) -> str:
    w = body["window"]
    parts = []
    for name in ("input_drift", "prediction_drift"):
        report = w.get(name) or {}
        if report.get("p_value") is not None:
            parts.append(f"{name.split('_')[0]} p={report['p_value']:.3g}")
        elif report:
            parts.append(f"{name.split('_')[0]}: {report.get('status')}")
    verdict = {True: "DRIFT", False: "no drift", None: "not enough data"}[w["drifted"]]
    return f"    window of {w['n_window']} inputs: {verdict} ({', '.join(parts)})"


def run_story(settings: Any, story: Story = Story(), say: Callable[[str], None] = typer.echo,
              then: Callable[[Any, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Play the story against an app built on ``settings``; returns what happened (for tests).

    ``then(api, result)``, if given, runs after the story while the app (engine, monitor) still
    runs; ``api.call(method, path, json=...)`` calls it as the demo tenant."""
    from fastapi.testclient import TestClient

    from monitoring.config import MonitorConfig
    from tuneloop.app import create_app
    from tuneloop.state import MonitorOptions, ServeOptions

    old, new = load_rows()
    train, valid = old[:story.v1_train], old[story.v1_train:story.v1_train + story.v1_valid]
    old_traffic = old[story.v1_train + story.v1_valid:][:story.old_traffic]
    new_traffic = new[:story.new_traffic]
    config = MonitorConfig(window_size=story.window_size, window_step=story.chunk,
                           min_window=min(50, story.chunk), min_reference=50,
                           eval_fraction=story.eval_fraction,
                           hyperparameters=story.retrain_hyperparameters or story.hyperparameters)
    app = create_app(settings, serve=ServeOptions(),
                     monitor=MonitorOptions(interval_s=story.monitor_interval_s, config=config))
    admin = {"Authorization": f"Bearer {settings.admin_key.get_secret_value()}"}
    result: dict[str, Any] = {}
    began = time.monotonic()
    with TestClient(app) as http:
        say("[1/6] Creating tenant 'demo' and its API key")
        http.post("/admin/tenants", json={"name": "demo"}, headers=admin).raise_for_status()
        key = http.post("/admin/tenants/demo/keys", headers=admin).json()["key"]
        api = _Api(http, key)

        say(f"[2/6] Training v1 of 'sentiment' on {len(train)} labeled tweets and movie reviews "
            f"({len(valid)} held out)")
        files = [api.call("POST", "/v1/files", data={"purpose": "fine-tune"},
                          files={"file": (name, _jsonl(rows), "application/jsonl")})["id"]
                 for name, rows in (("v1-train.jsonl", train), ("v1-valid.jsonl", valid))]
        job = api.call("POST", "/v1/fine_tuning/jobs", json={
            "model": settings.resolved_base_model_name, "training_file": files[0],
            "validation_file": files[1], "suffix": "sentiment", "task": "classification",
            "seed": 0, "hyperparameters": story.hyperparameters})
        job = _follow_job(api, job["id"], say, story.timeout_s)
        v1 = api.call("GET", "/v1/adapters/sentiment")["versions"][0]
        say(f"    v1 ready: held-out accuracy {v1['metrics']['eval']['adapter']['accuracy']:.2f}"
            f" (base model {v1['metrics']['eval']['base']['accuracy']:.2f})")

        policy = {"drift_windows_m": 2, "drift_windows_n": 3, "min_new_labels": None,
                  "min_new_examples": story.min_new_labels, "cooldown_hours": 0,
                  "auto_promote": True, "gate_tolerance": story.gate_tolerance,
                  "gate_min_improvement": story.gate_min_improvement}
        api.call("PUT", "/v1/adapters/sentiment/policy", json=policy)
        say("[3/6] Retrain policy: retrain when drift is found in 2 of the last 3 windows and "
            f"at least {story.min_new_labels} new labels arrived; promote if the candidate is "
            f"better on new data and at most {story.gate_tolerance:g} worse on old data (no "
            "cooldown for the demo; the default is 6 h)")
        _wait("the engine", lambda: http.get("/readyz").status_code == 200, story.timeout_s, 2.0)

        say(f"[4/6] Serving {len(old_traffic)} requests like the training data; users label "
            f"{story.labeled_share:.0%} of the responses")
        served = _serve(api, old_traffic)
        _label(api, served, story.labeled_share)
        result["v1_old_traffic_accuracy"] = _accuracy(served)
        body = _wait("the monitor's first window", lambda: _window_after(api, 0),
                     story.timeout_s)
        say(_drift_line(body))
        last_report = body["window"]["id"]

        say(f"[5/6] The traffic shifts to editorials and product reviews ({len(new_traffic)} "
            f"requests, {story.chunk} at a time)")
        shift_started = time.monotonic()
        shifted: list[dict] = []
        for start in range(0, len(new_traffic), story.chunk):
            chunk = _serve(api, new_traffic[start:start + story.chunk])
            shifted += chunk
            labels = _label(api, chunk, story.labeled_share)

            def next_window(after: int = last_report) -> dict | None:
                return _window_after(api, after)

            body = _wait("the monitor's next window", next_window, story.timeout_s)
            last_report = body["window"]["id"]
            say(f"    +{len(chunk)} requests (v1 accuracy on them "
                f"{_accuracy(chunk):.2f}), +{labels} labels")
            say(_drift_line(body))
            events = api.call("GET", "/v1/adapters/sentiment/events?type=decision&limit=1")
            if events["data"]:
                say(f"    policy: {events['data'][0]['message']}")
            if api.call("GET", "/v1/adapters/sentiment/retrains")["data"]:
                break
        result["v1_new_traffic_accuracy"] = _accuracy(shifted)
        run = _wait("the retrain the policy starts",
                    lambda: (api.call("GET", "/v1/adapters/sentiment/retrains")["data"] or [None])[0],
                    story.timeout_s)
        say(f"[6/6] Retraining: job {run['job_id']} warm-starts from v1 on "
            f"{run['dataset']['train']} examples ({run['dataset']['counts'].get('replay', 0)} "
            f"replayed from v1), {run['dataset']['eval']} held out for the gate")
        _follow_job(api, run["job_id"], say, story.timeout_s)
        say("    gating v2 against v1 on held-out new and old data ...")

        def gated() -> dict | None:
            latest = api.call("GET", "/v1/adapters/sentiment/retrains")["data"][0]
            return latest if latest["status"] != "training" else None

        run = _wait("the gate", gated, story.timeout_s, 2.0)
        result.update(run=run, seconds_to_new_champion=time.monotonic() - shift_started)
        evaluation = run.get("evaluation") or {}
        say("")
        say("    accuracy            new data (editorials, reviews)   old data (tweets, movies)")
        for version in sorted(k for k in evaluation if k.startswith("v")):
            m = evaluation[version]
            say(f"    {version:<19} {m.get('new', {}).get('accuracy', float('nan')):>10.2f}"
                f"{m.get('previous', {}).get('accuracy', float('nan')):>30.2f}")
        say(f"    (held out: {evaluation.get('split_sizes')})")
        say(f"    gate: {(run.get('gate') or {}).get('message')}")
        adapter = api.call("GET", "/v1/adapters/sentiment")
        result["champion"] = adapter["champion"]
        if run["status"] == "promoted":
            probe = _serve(api, new[story.new_traffic:story.new_traffic + 1])
            say(f"    {adapter['champion']} promoted by hot swap "
                f"{result['seconds_to_new_champion']:.0f} s after the shift began; "
                f"/v1/classify now answers with model {probe[0]['model']}")
            result["served_by"] = probe[0]["model"]
        else:
            say(f"    v2 was not promoted ({run['status']}); {adapter['champion']} keeps serving")
        if story.probe:
            result["served"], result["probe_rows"] = _probe(api, story, old, new, say)
        if then is not None:
            then(api, result)
        say(f"Done in {time.monotonic() - began:.0f} s. Events: GET /v1/adapters/sentiment/events")
    return result


def _probe(api: _Api, story: Story, old: list[dict], new: list[dict],
           say: Callable[[str], None]) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    """Accuracy of v1 and v2 as served by the engine on fresh texts of both distributions, and
    those texts ({"new": rows, "old": rows})."""
    start = story.v1_train + story.v1_valid + story.old_traffic
    n_old = story.probe if story.probe_old is None else story.probe_old
    sets = {"new": new[story.new_traffic + 1:][:story.probe], "old": old[start:][:n_old]}
    served: dict[str, dict[str, float]] = {}
    for version in ("v1", "v2"):
        served[version] = {}
        for name, rows in sets.items():
            if not rows:
                continue
            out = api.call("POST", "/v1/classify", json={
                "model": f"sentiment@{version}", "input": [r["text"] for r in rows]})
            predicted = [d["label"] for d in out["data"]]
            served[version][name] = sum(p == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    say(f"    served by the engine on fresh texts ({len(sets['new'])} new, {len(sets['old'])} "
        "old):")
    for version, acc in served.items():
        say(f"    {version:<19} {acc.get('new', float('nan')):>10.2f}"
            f"{acc.get('old', float('nan')):>30.2f}")
    return served, sets


def demo_settings(data_dir: Path | None = None) -> Any:
    """The embedded defaults under a fresh data directory, with the default base model."""
    from pydantic import SecretStr

    from services.base_model import import_default_model
    from serving.engine_process import free_port
    from tuneloop.cli.common import load

    settings = load()
    model = settings.resolved_base_model
    if not settings.base_model:
        model, _ = import_default_model(settings.default_base_model_dir)
    data_dir = data_dir or settings.data_dir / "demo" / time.strftime("%Y%m%d-%H%M%S")
    return settings.model_copy(update={
        "data_dir": data_dir, "database_url": None, "artifacts_url": None,
        "base_model": str(model), "engine_urls": [], "engine_port": free_port(),
        "admin_key": SecretStr(secrets.token_urlsafe(24)), "training_runner": "local"})


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        data_dir: Path = typer.Option(None, "--data-dir",
                                      help="Where the demo keeps its state (default: a new "
                                      "directory under <data dir>/demo)."),
    ) -> None:
        """Watch the loop close: train v1, shift the traffic, detect drift, retrain from
        feedback, gate and promote v2 (about 10 minutes on 2 CPU cores)."""
        settings = demo_settings(data_dir)
        typer.echo(f"tuneloop demo (state in {settings.data_dir})")
        started_ray = False
        if settings.ray_address is None:
            # Start Ray from the main thread: training subprocesses could not join a Ray that
            # the job manager's thread started (token auth of Ray >= 2.5x).
            import ray

            ray.init(include_dashboard=False, log_to_driver=False)
            settings = settings.model_copy(
                update={"ray_address": ray.get_runtime_context().gcs_address})
            started_ray = True
        try:
            run_story(settings)
        except (RuntimeError, TimeoutError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        finally:
            if started_ray:
                ray.shutdown()
