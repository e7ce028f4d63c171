"""The embedded default end to end: a plain ``tuneloop serve`` (local runner, no Ray address, so
the job manager's worker thread starts the local Ray head on the first job) trains a job created
through the API; tuneloop is killed (SIGKILL) mid-run; its Ray head goes away with it; the next
tuneloop queues the job again, resumes it from its last checkpoint and publishes the adapter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.vader import source_files

pytestmark = [pytest.mark.integration, pytest.mark.ray]

ADMIN = {"Authorization": "Bearer admin-test-key"}
JOBS = "/v1/fine_tuning/jobs"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` (pid -> command line)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = _cmdline(child)
            todo.append(child)
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate, timeout_s: float, poll_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


def _events(http: httpx.Client, headers: dict, job_id: str) -> list[dict]:
    body = http.get(f"{JOBS}/{job_id}/events", headers=headers,
                    params={"limit": 1000, "order": "asc"}).json()
    return body["data"]


def test_serve_trains_with_its_own_ray_and_a_killed_tuneloop_resumes_the_job(
        base_model_dir, tmp_path):
    data_dir = tmp_path / "data"
    port = _free_port()
    env = {**os.environ, "TUNELOOP_DATA_DIR": str(data_dir),
           "TUNELOOP_BASE_MODEL": str(base_model_dir), "TUNELOOP_BASE_MODEL_NAME": "base",
           "TUNELOOP_ADMIN_KEY": "admin-test-key", "TUNELOOP_PORT": str(port),
           # no engine in this test (parity is skipped): a URL nobody answers
           "TUNELOOP_ENGINE_URLS": f"http://127.0.0.1:{_free_port()}",
           "TUNELOOP_LOG_LEVEL": "warning"}
    for key in ("RAY_ADDRESS", "TUNELOOP_RAY_ADDRESS"):
        env.pop(key, None)
    train_path, valid_path = source_files(tmp_path, per_train=6, per_eval=3)
    tuneloop = str(Path(sys.executable).parent / "tuneloop")  # the installed CLI
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([tuneloop, "serve", "--no-monitor"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        assert _wait(lambda: _healthy(http), 120), (tmp_path / "serve.log").read_text()[-3000:]
        assert http.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN).status_code == 201
        key = http.post("/admin/tenants/acme/keys", headers=ADMIN).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        files = []
        for path in (train_path, valid_path):
            with open(path, "rb") as fh:
                r = http.post("/v1/files", headers=headers, data={"purpose": "fine-tune"},
                              files={"file": (path.name, fh)})
            assert r.status_code == 200, r.text
            files.append(r.json()["id"])
        r = http.post(JOBS, headers=headers, json={
            "model": "base", "training_file": files[0], "validation_file": files[1],
            "suffix": "source", "seed": 0, "task": "classification",
            "prompt_template": "Text: {text}\nSource ({labels}):",
            "hyperparameters": {"n_epochs": 2, "batch_size": 2, "learning_rate_multiplier": 10,
                                "max_length": 96, "checkpoint_every": 3}})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]

        # the job trains on the Ray its worker thread started, past two checkpoints (Ray may
        # still be committing the newest one when the process dies)
        def checkpointed() -> bool:
            body = http.get(f"{JOBS}/{job_id}", headers=headers).json()
            assert body["status"] in ("validating_files", "queued", "running"), body
            return sum(e["type"] == "checkpoint" for e in _events(http, headers, job_id)) >= 2

        assert _wait(checkpointed, 420, 0.5), (tmp_path / "serve.log").read_text()[-3000:]
        tree = _descendants(serve.pid)
        heads = [p for p, cmd in tree.items() if "training.runners.ray_head" in cmd]
        raylets = [p for p, cmd in tree.items() if "raylet" in cmd.split(" ")[0]]
        drivers = [p for p, cmd in tree.items() if "training.jobs.entrypoint" in cmd]
        assert len(heads) == 1 and raylets and len(drivers) == 1, tree
        drivers += list(_descendants(drivers[0]))
    finally:
        serve.send_signal(signal.SIGKILL)  # a hard crash: no shutdown hooks run
        serve.wait()

    ray_processes = [p for p, cmd in tree.items() if p not in drivers]
    assert _wait(lambda: not any(_alive(p) for p in ray_processes), 90), \
        {p: tree[p] for p in ray_processes if _alive(p)}
    crashed_at = max(e["data"]["step"] for e in _events_offline(data_dir, base_model_dir, job_id)
                     if e["type"] == "checkpoint")

    from fastapi.testclient import TestClient

    from services.settings import Settings
    from tuneloop.app import create_app

    settings = Settings(data_dir=data_dir, base_model=str(base_model_dir),
                        base_model_name="base", admin_key="admin-test-key")
    began = time.monotonic()
    with TestClient(create_app(settings)) as client:  # the restart: no Ray address either
        while True:
            body = client.get(f"{JOBS}/{job_id}", headers=headers).json()
            if body["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() - began < 600, body
            time.sleep(2)
        events = client.get(f"{JOBS}/{job_id}/events", headers=headers,
                            params={"limit": 1000, "order": "asc"}).json()["data"]
    assert body["status"] == "succeeded", (body["error"], [e["message"] for e in events[-8:]])
    assert not any(_alive(p) for p in drivers), "the dead tuneloop's run was not stopped"
    left = {p: c for p, c in _descendants(os.getpid()).items() if "tlray-" in c or "ray_head" in c}
    assert not left, f"the restarted tuneloop's Ray head outlived its shutdown: {left}"
    assert body["fine_tuned_model"] == "source@v1"
    requeued = [e for e in events if e["type"] == "queued" and (e["data"] or {}).get("restart")]
    assert len(requeued) == 1 and requeued[0]["data"]["resume_step"] == crashed_at
    assert f"resumes from its latest checkpoint (step {crashed_at} or later)" in \
        requeued[0]["message"]
    resumed = [e for e in events if "resumed from the checkpoint at step" in e["message"]]
    assert len(resumed) == 1, [e["message"] for e in events]
    resumed_step = resumed[0]["data"]["step"]
    # the run kept going (and checkpointing) while its Ray head shut down after the crash
    assert resumed_step >= crashed_at and resumed_step % 3 == 0
    after = events.index(resumed[0])
    steps_after = [e["data"]["step"] for e in events[after:] if e["type"] == "metrics"]
    assert steps_after and steps_after[0] == resumed_step + 1, steps_after
    assert steps_after[-1] == steps_after[0] + len(steps_after) - 1  # no step repeated
    assert [e["type"] for e in events][-2:] == ["published", "succeeded"]


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _events_offline(data_dir: Path, base_model_dir: Path, job_id: str) -> list[dict]:
    """The job's events read straight from the store (no tuneloop running)."""
    from services.platform import Platform
    from services.settings import Settings
    from training.jobs import store

    platform = Platform.open(Settings(data_dir=data_dir, base_model=str(base_model_dir),
                                      admin_key="admin-test-key"))
    try:
        with platform.store.read() as session:
            rows, _ = store.list_events(session, job_id, limit=1000, oldest_first=True)
            return [{"type": r.type, "data": json.loads(json.dumps(r.data or {}))} for r in rows]
    finally:
        platform.close()
