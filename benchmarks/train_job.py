"""Time from job creation to a servable adapter, through a plain ``tuneloop serve``.

Starts ``tuneloop serve --no-monitor`` (embedded defaults: SQLite, local artifacts, the local
runner starting its own Ray on the first job, a spawned vLLM engine for the parity check) on a
fresh data dir, waits until it is ready, uploads ``--examples`` real labeled texts (tests/data/
drift/vader_domains.jsonl: short texts labelled by where they come from, 4 classes, equal
counts, no duplicates) and creates a classification job with the API's defaults ("auto"
hyperparameters). It polls the job to its end and prints where the time went, from the job's
events (server side, 1 s resolution) and the run's progress file (training side, sub-second):

validation -> queue and submit -> run setup (driver start, data, tokenizing) -> Ray Train start
and model load -> training steps -> save and evaluation (adapter and base on the held-out split)
-> job checks on the training machine (champion, PEFT parity reference) -> gate, parity through
the engine, publish.

    flock /tmp/tuneloop-heavy.lock .venv/bin/python benchmarks/train_job.py --examples 1000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "drift" / "vader_domains.jsonl"
LABELS = {"tweet": "tweet", "movie_review": "film", "product_review": "product",
          "editorial": "news"}
ADMIN = {"Authorization": "Bearer bench-admin-key"}
JOBS = "/v1/fine_tuning/jobs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dataset(n: int, max_chars: int) -> list[dict]:
    """``n`` examples, the same number per class, in file order, texts up to ``max_chars``."""
    per_class: dict[str, list[dict]] = defaultdict(list)
    want = n // len(LABELS)
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        label = LABELS[row["domain"]]
        if len(row["text"]) <= max_chars and len(per_class[label]) < want:
            per_class[label].append({"text": row["text"], "label": label})
    rows = [r for group in zip(*per_class.values()) for r in group]  # interleave the classes
    if len(rows) < n - len(LABELS) + 1:
        raise SystemExit(f"only {len(rows)} texts up to {max_chars} characters; raise --max-chars")
    return rows


def wait(predicate, timeout_s: float, poll_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    return False


def phase_table(events: list[dict], progress: list[dict]) -> list[tuple[str, float]]:
    """(phase, seconds): server events for the job's edges, progress times inside the run."""
    def at(kind: str, contains: str = "") -> float | None:
        hits = [e["created_at"] for e in events if e["type"] == kind and contains in e["message"]]
        return float(hits[0]) if hits else None

    def run(kind: str, last: bool = False) -> float | None:
        hits = [e["time"] for e in progress if e.get("event") == kind]
        return float(hits[-1 if last else 0]) if hits else None

    marks = [
        ("validation (files checked again against the job)", at("created"), at("validated")),
        ("queue and submit (incl. starting the local Ray head)", at("validated"), at("started")),
        ("run setup: driver start, imports, data, tokenizing", at("started"), run("validated")),
        ("Ray Train start, worker model load", run("validated"), run("training_started")),
        ("training steps", run("training_started"), run("step", last=True)),
        ("save, evaluation of adapter and base on the held-out split", run("step", last=True),
         run("evaluated")),
        ("job checks on the training machine, run exit", run("evaluated"), at("gate_decision")),
        ("gate, parity through the engine, publish", at("gate_decision"), at("succeeded")),
    ]
    return [(name, b - a) for name, a, b in marks if a is not None and b is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-model", default=str(REPO / ".tuneloop/models/SmolLM2-135M-Instruct"))
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--max-chars", type=int, default=120)
    parser.add_argument("--hyperparameters", default="{}",
                        help='JSON, e.g. \'{"packing": true}\' (default: the API\'s "auto")')
    parser.add_argument("--workers", type=int, default=1, help="TUNELOOP_TRAIN_WORKERS")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()

    rows = dataset(args.examples, args.max_chars)
    data_dir = Path(tempfile.mkdtemp(prefix="tuneloop-jobbench-"))
    port, engine_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELOOP_", "RAY_"))}
    env.update(TUNELOOP_DATA_DIR=str(data_dir), TUNELOOP_BASE_MODEL=args.base_model,
               TUNELOOP_ADMIN_KEY="bench-admin-key", TUNELOOP_BASE_MODEL_NAME="base",
               TUNELOOP_PORT=str(port),
               TUNELOOP_ENGINE_PORT=str(engine_port), TUNELOOP_LOG_LEVEL="warning",
               TUNELOOP_TRAIN_WORKERS=str(args.workers))
    tuneloop = str(Path(sys.executable).parent / "tuneloop")
    log_path = data_dir / "serve.log"
    print(f"data: {len(rows)} examples ({', '.join(sorted(set(LABELS.values())))}), "
          f"state in {data_dir}", flush=True)
    with open(log_path, "wb") as log:
        serve = subprocess.Popen([tuneloop, "serve", "--no-monitor"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        began = time.monotonic()
        if not wait(lambda: http.get("/readyz").status_code == 200, 600, 2):
            raise SystemExit("tuneloop serve did not get ready:\n" + log_path.read_text()[-3000:])
        print(f"tuneloop serve ready (engine up) in {time.monotonic() - began:.0f} s", flush=True)
        assert http.post("/admin/tenants", json={"name": "bench"}, headers=ADMIN).is_success
        key = http.post("/admin/tenants/bench/keys", headers=ADMIN).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        file_id = http.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                            files={"file": ("train.jsonl", body)}).json()["id"]
        created = time.monotonic()
        r = http.post(JOBS, headers=headers, json={
            "model": "base", "training_file": file_id, "suffix": "source", "seed": 0,
            "task": "classification", "hyperparameters": json.loads(args.hyperparameters)})
        if not r.is_success:
            raise SystemExit(f"job creation failed: {r.text}")
        job = r.json()
        print(f"job {job['id']}: hyperparameters {json.dumps(job['hyperparameters'])}",
              flush=True)
        last = ""
        while job["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(2)
            job = http.get(f"{JOBS}/{job['id']}", headers=headers).json()
            step = (job.get("progress") or {}).get("step")
            line = f"  {time.monotonic() - created:6.0f} s {job['status']} step {step}"
            if line.split(" s ")[1] != last:
                print(line, flush=True)
                last = line.split(" s ")[1]
        total = time.monotonic() - created
        events = http.get(f"{JOBS}/{job['id']}/events", headers=headers,
                          params={"limit": 1000, "order": "asc"}).json()["data"]
        progress_path = data_dir / "jobs" / job["id"] / "progress.jsonl"
        progress = [json.loads(x) for x in progress_path.read_text().splitlines() if x.strip()]
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(120)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['status']}: {job['error']}\n"
                         + "\n".join(e["message"][:300] for e in events[-8:]))
    steps = [e for e in progress if e.get("event") == "step"]
    tokens = sum(e["tokens"] for e in steps)
    evaluated = next(e for e in events if e["type"] == "evaluated")["data"]
    print(f"\n{job['fine_tuned_model']} servable {total:.0f} s after job creation "
          f"({len(steps)} steps, {tokens} tokens)")
    for name, seconds in phase_table(events, progress):
        print(f"  {seconds:7.1f} s  {seconds / total:4.0%}  {name}")
    loop_s = steps[-1]["time"] - next(e["time"] for e in progress
                                      if e.get("event") == "training_started")
    print(f"training tokens/s {tokens / loop_s:.0f}; held-out accuracy adapter "
          f"{evaluated['adapter']['accuracy']:.3f} vs base {evaluated['base']['accuracy']:.3f} "
          f"({len(LABELS)} classes)")
    for e in events:
        if e["type"] in ("parity_checked", "parity_skipped", "gate_decision"):
            print(f"  {e['type']}: {e['message'][:160]}")
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
