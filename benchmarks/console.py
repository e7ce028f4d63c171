"""The console's render time with a production-sized store: every page, in headless Chromium.

Seeds a temporary SQLite store through the store models (bulk inserts of the rows the job
manager, the registry, the monitor and the request log write): one tenant with 100 adapters of
10 versions each (1,000 versions, classification metrics with confusion matrices, gates and
lineage), 100 fine-tuning jobs with 5,000 job events (one long run with 4,000 loss points),
5,000 monitor events (4,000 on the first adapter), 200 drift/quality reports, 10,000 logged
requests and 2,000 feedback items. Then runs the real app (``create_app``, platform API and
console, no engine) under uvicorn on 127.0.0.1 and drives Debian Chromium with Playwright over
every page: for each, ``--loads`` full page loads (a fresh document each time, the key already in
session storage), timed from navigation until a selector shows the page's data is drawn, and the
browser's Resource Timing of the API calls behind it. Prints the median per page and per call.

Usage: python benchmarks/console.py [--loads 5] [--json results.json]
Needs /usr/bin/chromium (``bash scripts/system-deps.sh``) and the default base model in
.tuneloop/models (``make run`` or the test suite imports it).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, update

from monitoring.policy import RetrainPolicy
from services.platform import Platform
from services.settings import Settings
from services.store.models import (
    Adapter,
    AdapterTask,
    AdapterVersion,
    ChampionAction,
    ChampionChange,
    FeedbackRecord,
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
    JobStatus,
    MonitorEvent,
    MonitorReport,
    RequestRecord,
    RetrainPolicyRecord,
    utcnow,
)
from services.tenants import create_key, create_tenant
from training.evaluation import classification_metrics
from training.gate import decide_gate

MODEL = ROOT / ".tuneloop" / "models" / "SmolLM2-135M-Instruct"
CHROMIUM = "/usr/bin/chromium"
ADMIN_KEY = "bench-admin-key"
LABELS = ["billing", "bug", "praise", "refund", "shipping", "account"]
ADAPTERS, VERSIONS = 100, 10
JOB_EVENTS, LONG_RUN_STEPS = 5_000, 4_000
MONITOR_EVENTS, HEAVY_ADAPTER_EVENTS = 5_000, 4_000
REPORTS, REQUESTS, FEEDBACK = 200, 10_000, 2_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(rng: random.Random, job_id: str, accuracy: float, champion: dict | None) -> dict:
    """A classification version's metrics as training/jobs/publish.py stores them."""
    def predictions(acc: float) -> tuple[list[str], list[str]]:
        truth = [LABELS[i % len(LABELS)] for i in range(120)]
        return truth, [t if rng.random() < acc else rng.choice(LABELS) for t in truth]

    adapter = classification_metrics(*predictions(accuracy), LABELS)
    base = classification_metrics(*predictions(0.3), LABELS)
    gate = decide_gate({"held_out": adapter}, {"held_out": champion} if champion else None,
                       "held_out", metric="accuracy", higher_is_better=True,
                       base={"held_out": base}, champion_version="v-prev" if champion else None)
    evaluation = {"adapter": adapter, "base": base}
    if champion:
        evaluation["champion"] = {**champion, "version": "v-prev"}
    return {"eval": evaluation, "train": {"train_loss": round(1 - accuracy / 2, 4), "steps": 40},
            "gate": gate.to_dict(), "job_id": job_id, "wall_time_s": 41.5}


def seed(platform: Platform) -> dict:
    """Write the production-sized store; returns the tenant key and the pages' subjects."""
    rng = random.Random(7)
    now = utcnow()
    started = now - timedelta(days=30)
    with platform.store.write() as s:
        tenant = create_tenant(s, "acme")
        for other in ("globex", "initech", "umbrella", "hooli"):
            create_tenant(s, other)
        key = create_key(s, "acme").key
        s.flush()
        job_rows, version_rows, change_rows, event_rows = [], [], [], []
        # Version v of every adapter gets the same metrics (computing 1,000 takes minutes here).
        metrics, champion = {}, None
        for v in range(1, VERSIONS + 1):
            metrics[v] = _metrics(rng, "", 0.6 + 0.03 * v, champion)
            champion = metrics[v]["eval"]["adapter"]
        for a in range(ADAPTERS):
            name = f"adapter-{a:03d}"
            adapter = Adapter(tenant_id=tenant.id, name=name, task=AdapterTask.CLASSIFICATION,
                              last_version=VERSIONS, created_at=started)
            s.add(adapter)
            s.flush()
            job_id = f"ftjob-bench{a:03d}"
            long_run = a == 0
            status = JobStatus.QUEUED if a >= ADAPTERS - 10 else JobStatus.SUCCEEDED
            steps = LONG_RUN_STEPS if long_run else (JOB_EVENTS - LONG_RUN_STEPS) // ADAPTERS
            job_rows.append(dict(
                id=job_id, tenant_id=tenant.id, status=status, model="base", adapter_name=name,
                task=AdapterTask.CLASSIFICATION, training_file=f"file-bench{a:03d}",
                hyperparameters={"n_epochs": 3, "learning_rate_multiplier": 1.0, "lora_rank": 8},
                labels=LABELS, seed=0, run_name=f"run-{a}", runner="local",
                progress={"step": steps, "total_steps": steps, "loss": 0.31},
                fine_tuned_model=f"{name}@v{VERSIONS}" if status == JobStatus.SUCCEEDED else None,
                created_at=started + timedelta(minutes=a)))
            for step in range(1, steps + 1):
                event_rows.append(dict(job_id=job_id, type="metrics", level="info",
                                       message=f"Step {step}/{steps}",
                                       data={"step": step, "total_steps": steps,
                                             "train_loss": round(2.5 / (1 + step / 50), 4)},
                                       created_at=started + timedelta(minutes=a, seconds=step)))
            for v in range(1, VERSIONS + 1):
                version_rows.append(dict(
                    adapter_id=adapter.id, version=v, task=AdapterTask.CLASSIFICATION,
                    labels=LABELS, rank=8, base_fingerprint="0" * 64, artifact_key="0" * 64,
                    size_bytes=4_000_000, metrics={**metrics[v], "job_id": job_id},
                    lineage={"source": "fine_tuning_job", "job_id": job_id,
                             "training_file": {"id": f"file-bench{a:03d}",
                                               "filename": f"{name}.jsonl", "examples": 400},
                             "parent_version": f"{name}@v{v - 1}" if v > 1 else None},
                    created_at=started + timedelta(days=v, minutes=a)))
        s.execute(insert(FineTuningJob), job_rows)
        s.execute(insert(AdapterVersion), version_rows)
        s.execute(insert(FineTuningEvent), event_rows)
        s.execute(insert(FineTuningCheckpoint), [
            dict(id=f"ftckpt-bench{i:04d}", job_id="ftjob-bench000", step=i * 400,
                 metrics={"train_loss": 0.3}) for i in range(1, 11)])
        versions = {(r.adapter_id, r.version): r.id for r in s.query(AdapterVersion)}
        adapter_ids = sorted({adapter_id for adapter_id, _ in versions})
        for adapter_id in adapter_ids:
            for v in range(2, VERSIONS + 1):
                change_rows.append(dict(adapter_id=adapter_id,
                                        from_version_id=versions[(adapter_id, v - 1)],
                                        to_version_id=versions[(adapter_id, v)],
                                        action=ChampionAction.PROMOTE, reason="gate passed",
                                        created_at=started + timedelta(days=v)))
            s.execute(update(Adapter).where(Adapter.id == adapter_id).values(
                champion_version_id=versions[(adapter_id, VERSIONS)]))
        s.execute(insert(ChampionChange), change_rows)
        heavy = adapter_ids[0]
        policy = RetrainPolicy().model_dump(mode="json")
        s.execute(insert(RetrainPolicyRecord), [dict(adapter_id=i, tenant_id=tenant.id,
                                                     policy=policy) for i in adapter_ids])
        per_other = (MONITOR_EVENTS - HEAVY_ADAPTER_EVENTS) // (ADAPTERS - 1)
        s.execute(insert(MonitorEvent), [
            dict(adapter_id=adapter_id, type=kind, action=action, reason=reason,
                 message=f"{kind}: {action} ({reason})", data={"window": i},
                 created_at=now - timedelta(minutes=i))
            for adapter_id in adapter_ids
            for i in range(HEAVY_ADAPTER_EVENTS if adapter_id == heavy else per_other)
            for kind, action, reason in [rng.choice([("decision", "wait", "no_drift"),
                                                     ("decision", "retrain", "drift"),
                                                     ("gate", "failed", "no_improvement")])]])
        s.execute(insert(MonitorReport), [
            dict(adapter_id=heavy, version=VERSIONS, new_window=True, drifted=i % 7 == 0,
                 n_window=200, window_end=now - timedelta(hours=6 * i),
                 input_drift={"statistic": 0.01, "p_value": 0.3 if i % 7 else 0.001,
                              "threshold": 0.01, "drifted": i % 7 == 0, "n_reference": 400,
                              "n_window": 200, "status": "no_drift"},
                 prediction_drift={"statistic": 0.02, "p_value": 0.4, "threshold": 0.01,
                                   "drifted": False, "n_reference": 400, "n_window": 200,
                                   "status": "no_drift"},
                 quality={"status": "ok", "degraded": False, "checks": {
                     "accuracy": {"value": 0.85, "n": 40, "baseline": 0.86, "worse": False},
                     "negative_rate": {"value": 0.07, "n": 60, "baseline": 0.08,
                                       "worse": False}},
                     "counts": {"labeled": 40, "correct": 34, "rated": 60, "negative": 4}},
                 created_at=now - timedelta(hours=6 * i)) for i in range(REPORTS)])
        request_rows = [dict(
            id=f"clf-bench{i:05d}", tenant_id=tenant.id,
            adapter=f"adapter-{0 if i % 5 == 0 else i % ADAPTERS:03d}",
            adapter_version=VERSIONS, route="classify", status=200,
            input=f"ticket {i}: my card was charged twice for order {i * 7}",
            output=rng.choice(LABELS), latency_ms=12.5, created_at=now - timedelta(seconds=i))
            for i in range(REQUESTS)]
        s.execute(insert(RequestRecord), request_rows)
        s.execute(insert(FeedbackRecord), [dict(
            id=f"fb-bench{i:05d}", tenant_id=tenant.id, response_id=r["id"],
            adapter=r["adapter"], adapter_version=VERSIONS, label=rng.choice(LABELS),
            created_at=r["created_at"]) for i, r in enumerate(request_rows[::5][:FEEDBACK])])
    return {"key": key, "adapter": "adapter-000", "job": "ftjob-bench000"}


def _serve(app) -> tuple[str, object, threading.Thread]:  # noqa: ANN001
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start under uvicorn")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


def _pages(subjects: dict) -> list[tuple[str, str, str, str]]:
    """(role, page, hash route, JS condition that is true once the page's data is drawn)."""
    adapter, job = subjects["adapter"], subjects["job"]
    rows = "document.querySelectorAll('#view tbody tr').length"
    return [
        ("tenant", "adapter list (100 adapters)", "#/adapters", f"{rows} === {ADAPTERS}"),
        ("tenant", f"adapter page ({adapter})", f"#/adapters/{adapter}",
         "document.querySelector('#champion') && "
         "document.querySelectorAll('#monitor-events tbody tr').length === 50 && "
         "document.querySelectorAll('#latest-requests tbody tr').length === 20 && "
         "document.querySelector('#policy-schedule_hours') && "
         f"document.querySelector('#chart-accuracy[data-points=\"{REPORTS}\"]')"),
        ("tenant", "version page", f"#/adapters/{adapter}/versions/{VERSIONS}",
         f"document.querySelectorAll('#confusion td.diag').length === {len(LABELS)}"),
        ("tenant", "jobs list (100 jobs)", "#/jobs",
         f"document.querySelectorAll('a.job-link').length === {ADAPTERS}"),
        ("tenant", f"job page ({LONG_RUN_STEPS} loss points)", f"#/jobs/{job}",
         f"document.querySelector('svg.chart[data-points=\"{LONG_RUN_STEPS}\"]') && "
         f"{rows} >= 50"),
        ("tenant", "playground", "#/playground",
         f"document.querySelectorAll('#chat-model option').length === {ADAPTERS}"),
        ("admin", "operator: tenants and keys", "#/operator",
         "document.querySelectorAll('.tenant-name').length === 5"),
        ("admin", "operator: engines, jobs, monitor", "#/platform",
         "document.querySelectorAll('#monitor-decisions tbody tr').length === 50 && "
         "document.querySelectorAll('#job-queue tbody tr').length === 10"),
    ]


_API_TIMES = """() => performance.getEntriesByType('resource')
  .filter((e) => /\\/(v1|admin)\\//.test(new URL(e.name).pathname))
  .map((e) => [new URL(e.name).pathname, e.duration])"""
# A light page to come from for the in-app navigations (its own condition, not timed).
_START = {"tenant": [("#/adapters/adapter-099/versions/1", "document.querySelector('#gate')")],
          "admin": [("#/operator", "document.querySelector('.tenant-name')"),
                    ("#/platform", "document.querySelector('#monitor-decisions tbody tr')")]}


def _drawn_at(page, condition: str) -> float:  # noqa: ANN001
    """Seconds from ``window.__t0`` (the navigation's start when unset) until ``condition``
    first holds, checked on every animation frame in the page."""
    return page.wait_for_function(
        f"() => ({condition}) ? performance.now() - (window.__t0 || 0) : false",
        polling="raf").json_value() / 1000


def _api_times(page, calls: dict) -> None:  # noqa: ANN001
    for path, ms in page.evaluate(_API_TIMES):
        calls.setdefault(path, []).append(ms / 1000)


def measure(url: str, subjects: dict, loads: int) -> list[dict]:
    """Per page: ``loads`` full page loads (a new document; assets revalidated from the cache)
    and ``loads`` in-app navigations (a hash change from a light page, as a click does), after
    one untimed warm-up load each."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        for role in ("tenant", "admin"):
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc, errors=errors: errors.append(str(exc)))
            key = subjects["key"] if role == "tenant" else ADMIN_KEY
            page.goto(f"{url}/ui")
            page.evaluate("([k, r]) => { sessionStorage.setItem('tuneloop.key', k); "
                          "sessionStorage.setItem('tuneloop.role', r); }", [key, role])
            for page_role, label, route, drawn in _pages(subjects):
                if page_role != role:
                    continue
                full, in_app, calls = [], [], {}
                for i in range(loads + 1):
                    page.goto("about:blank")
                    page.goto(f"{url}/ui{route}")
                    elapsed = _drawn_at(page, drawn)
                    if i:  # the first load warms caches and is not counted
                        full.append(elapsed)
                        _api_times(page, calls)
                start, start_drawn = next(x for x in _START[role] if x[0] != route)
                for _ in range(loads):
                    page.evaluate("h => { location.hash = h; }", start)
                    _drawn_at(page, start_drawn)
                    page.evaluate("""h => { performance.clearResourceTimings();
                        document.getElementById('view').replaceChildren();
                        window.__t0 = performance.now(); location.hash = h; }""", route)
                    in_app.append(_drawn_at(page, drawn))
                    page.evaluate("() => { window.__t0 = 0; }")
                if errors:
                    raise RuntimeError(f"{label}: page errors {errors}")
                results.append({"page": label, "route": route,
                                "full_load_s": statistics.median(full),
                                "in_app_s": statistics.median(in_app),
                                "api_s": {path: statistics.median(v) for path, v in calls.items()}})
            context.close()
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", type=int, default=5, help="timed loads per page (median)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: run `bash scripts/system-deps.sh`")
    from tuneloop.app import create_app

    with tempfile.TemporaryDirectory(prefix="tuneloop-console-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), base_model=str(MODEL), admin_key=ADMIN_KEY,
                            base_model_name="base")
        platform = Platform.open(settings)
        t0 = time.perf_counter()
        subjects = seed(platform)
        print(f"seeded {ADAPTERS} adapters, {ADAPTERS * VERSIONS} versions, {JOB_EVENTS} job "
              f"events, {MONITOR_EVENTS} monitor events, {REPORTS} reports, {REQUESTS} requests, "
              f"{FEEDBACK} feedback in {time.perf_counter() - t0:.1f} s", flush=True)
        app = create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 1.0})
        url, server, thread = _serve(app)
        try:
            results = measure(url, subjects, args.loads)
        finally:
            server.should_exit = True
            thread.join(30)
            platform.close()
    print(f"\n{'page':<36} {'full load':>9} {'in app':>8}   API calls (median, as the browser "
          "saw them in the full loads)")
    for r in results:
        api = ", ".join(f"{path} {s * 1000:.0f} ms"
                        for path, s in r["api_s"].items())
        flag = "" if max(r["full_load_s"], r["in_app_s"]) <= 1.0 else "  OVER 1 s"
        print(f"{r['page']:<36} {r['full_load_s'] * 1000:6.0f} ms {r['in_app_s'] * 1000:5.0f} ms"
              f"   {api}{flag}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
