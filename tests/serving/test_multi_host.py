"""Several machines that share only PostgreSQL, an S3 server and the network.

Each "host" is its own mount namespace (tests/support/hosts.py: private /tmp, /dev/shm, HOME and
data dir; the checkout read-only), so no process can hand another a local path. Topology: two
``tuneloop engine`` hosts, two ``tuneloop serve`` gateways (no local engine, no monitor), a Ray
cluster of a head and a worker node on two more hosts, and later a ``tuneloop monitor`` host,
over one PostgreSQL database and one S3 artifact store (moto). Shown here:

- an adapter registered through gateway 1 is served through gateway 2, with PEFT's greedy reply,
  by engines that fetched it from the store themselves;
- an engine SIGKILLed under load costs no 500s, the other engine takes over within seconds and
  fetches the adapter on its own; the restarted engine serves again with nothing restored by hand;
- a promotion through gateway 1 is served by gateway 2 within 2 s, and a key revoked through
  gateway 1 is refused by gateway 2 within the documented bound (TUNELOOP_SERVING_SYNC_INTERVAL_S
  plus a store read);
- an engine refuses a request without the engine key;
- a fine-tuning job created through gateway 2 trains on the Ray cluster (a worker on each node,
  inputs, progress and checkpoints in S3) and its version is served through gateway 1;
- the monitor, on its own host, retrains on new labels on the cluster, gates and promotes; both
  gateways serve the promotion.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support import lora_training
from tests.support.archives import tar_dir
from tests.support.hosts import Host, free_port
from tests.support.s3_server import s3_server

pytestmark = [pytest.mark.integration, pytest.mark.engine, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN = {"Authorization": "Bearer admin-multi-host"}
ENGINE_KEY = "engine-multi-host-key"
SYNC_INTERVAL_S = 0.5


class Cluster:
    def __init__(self, tmp_path: Path, base_model_dir: Path, postgres_url: str, s3) -> None:  # noqa: ANN001
        self.s3 = s3
        common = {
            **s3.env,
            "TUNELOOP_ARTIFACTS_URL": s3.artifacts_url,
            "TUNELOOP_BASE_MODEL": str(base_model_dir),
            "TUNELOOP_BASE_MODEL_NAME": "base",
            "PYTHONPATH": str(REPO_ROOT),  # this checkout, whatever the venv was installed from
            "TUNELOOP_ENGINE_API_KEY": ENGINE_KEY,
            "TUNELOOP_MAX_MODEL_LEN": "1024",
            "TUNELOOP_LOG_LEVEL": "warning",
        }
        # A Ray cluster: the head on one host, a worker node on another, one CPU each, so a
        # two-worker training run has a worker on each; no auth token (per-host HOMEs).
        ray_env = {**common, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.ray_port, self.ray_dashboard_port = free_port(), free_port()
        self.ray_dashboard = f"http://127.0.0.1:{self.ray_dashboard_port}"
        self.ray_hosts = [Host(f"ray-{role}", tmp_path, REPO_ROOT, ray_env)
                          for role in ("head", "worker")]
        self.tmp_path, self.postgres_url, self.common = tmp_path, postgres_url, common
        self.engine_hosts: list[Host] = []
        self.gateway_hosts: list[Host] = []
        self.monitor_host: Host | None = None

    def _place(self) -> None:
        """Ports and hosts of the engines, gateways and monitor, picked once the Ray cluster
        runs: Ray's processes bind ports of the same ephemeral range as they start, and one that
        took a port picked before it answered the test instead of a gateway (its metrics
        server, 405 on POST)."""
        tmp_path, postgres_url, common = self.tmp_path, self.postgres_url, self.common
        self.engine_ports = [free_port(), free_port()]
        self.engine_urls = [f"http://127.0.0.1:{p}" for p in self.engine_ports]
        self.engine_hosts = [
            Host(f"engine-{i}", tmp_path, REPO_ROOT, {
                **common, "TUNELOOP_ENGINE_KV_CACHE_BYTES": str(256 * 1024 * 1024)})
            for i in (1, 2)
        ]
        self.gateway_ports = [free_port(), free_port()]
        self.gateway_urls = [f"http://127.0.0.1:{p}" for p in self.gateway_ports]
        self.gateway_hosts = [
            Host(f"gateway-{i}", tmp_path, REPO_ROOT, {
                **common, "TUNELOOP_DATABASE_URL": postgres_url, "TUNELOOP_ADMIN_KEY": "admin-multi-host",
                "TUNELOOP_ENGINE_URLS": ",".join(self.engine_urls), "TUNELOOP_PORT": str(port),
                "TUNELOOP_MONITOR_IN_SERVE": "false", "TUNELOOP_TRAINING_RUNNER": "ray",
                "TUNELOOP_RAY_ADDRESS": self.ray_dashboard, "TUNELOOP_TRAIN_WORKERS": "2",
                "TUNELOOP_TRAIN_CPUS_PER_WORKER": "1",
                "TUNELOOP_SERVING_SYNC_INTERVAL_S": str(SYNC_INTERVAL_S),
                "TUNELOOP_TENANT_RATE_PER_S": "1000"})
            for i, port in zip((1, 2), self.gateway_ports)
        ]
        self.monitor_host = Host("monitor", tmp_path, REPO_ROOT, {
            **self.gateway_hosts[0].env, "TUNELOOP_TRAIN_CONCURRENCY": "1"})

    def start_engine(self, i: int) -> None:
        proc = self.engine_hosts[i].start(
            ["tuneloop", "engine", "--host", "127.0.0.1", "--port", str(self.engine_ports[i])],
            log_name="engine")
        proc.wait_http(f"{self.engine_urls[i]}/health", timeout_s=600)

    def start_monitor(self) -> None:
        """``tuneloop monitor`` on a host of its own (it starts retrains on the Ray cluster)."""
        port = free_port()
        proc = self.monitor_host.start(
            ["tuneloop", "monitor", "--interval", "2", "--host", "127.0.0.1", "--port", str(port)],
            log_name="monitor")
        proc.wait_http(f"http://127.0.0.1:{port}/healthz", timeout_s=300)

    def start_ray(self) -> None:
        node = ["ray", "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1",
                "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port())]
        head, worker = self.ray_hosts
        proc = head.start([*node, "--head", "--port", str(self.ray_port),
                           "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                           "--dashboard-port", str(self.ray_dashboard_port),
                           "--ray-client-server-port", str(free_port())], log_name="ray-head")
        proc.wait_http(f"{self.ray_dashboard}/api/version", timeout_s=180)
        node[node.index("--dashboard-agent-listen-port") + 1] = str(free_port())
        worker.start([*node, "--address", f"127.0.0.1:{self.ray_port}"], log_name="ray-worker")
        until(lambda: alive_ray_nodes(self.ray_dashboard) >= 2, 180, "the Ray worker node joins")

    def start(self) -> None:
        self.start_ray()
        self._place()
        for i in (0, 1):
            self.engine_hosts[i].start(
                ["tuneloop", "engine", "--host", "127.0.0.1", "--port", str(self.engine_ports[i])],
                log_name="engine")
        for i in (0, 1):  # engines start side by side; gateways once engines answer
            self.engine_hosts[i].processes[0].wait_http(f"{self.engine_urls[i]}/health", timeout_s=600)
        for host in self.gateway_hosts:
            host.start(["tuneloop", "serve", "--no-monitor"], log_name="gateway")
        for host, url in zip(self.gateway_hosts, self.gateway_urls):
            host.processes[0].wait_http(f"{url}/readyz", timeout_s=300)

    def close(self) -> None:
        for host in self._hosts():
            host.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path}\n{p.log_tail(30)}"
                         for h in self._hosts() for p in h.processes)

    def _hosts(self) -> list[Host]:
        monitor = [self.monitor_host] if self.monitor_host is not None else []
        return [*monitor, *self.gateway_hosts, *self.engine_hosts, *self.ray_hosts]


@pytest.fixture
def cluster(tmp_path, base_model_dir, postgres_url):
    with s3_server(log_path=tmp_path / "moto.log") as s3:
        c = Cluster(tmp_path, base_model_dir, postgres_url, s3)
        try:
            c.start()
            yield c
        except BaseException:
            print(c.logs())
            raise
        finally:
            c.close()


def chat(url: str, auth: dict, model: str, timeout: float = 120,
         max_tokens: int = lora_training.PARITY_MAX_TOKENS) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=auth, timeout=timeout)


def probe_every(period_s: float, for_s: float,
                request: Callable[[], httpx.Response]) -> list[tuple[float, int, str | None]]:
    """Send ``request`` every ``period_s`` for ``for_s`` seconds without waiting for the answers
    (a slow engine does not coarsen the measurement): [(sent at, status, model answered)]."""
    def one() -> tuple[float, int, str | None]:
        sent = time.monotonic()
        response = request()
        return sent, response.status_code, (response.json().get("model")
                                             if response.status_code == 200 else None)

    with concurrent.futures.ThreadPoolExecutor(int(for_s / period_s) + 1) as pool:
        futures = []
        end = time.monotonic() + for_s
        while time.monotonic() < end:
            futures.append(pool.submit(one))
            time.sleep(period_s)
        return sorted(f.result() for f in futures)


def engine_adapters(url: str) -> set[str]:
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {ENGINE_KEY}"},
                       timeout=30).json()["data"]
    return {m["id"] for m in models if m.get("parent")}


def alive_ray_nodes(dashboard: str) -> int:
    try:
        nodes = httpx.get(f"{dashboard}/api/v0/nodes", timeout=10).json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return 0
    return sum(1 for n in nodes.get("result", nodes) if n.get("state") == "ALIVE")


def until(predicate, timeout_s: float, what: str) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - start


def test_engines_gateways_and_the_store_on_separate_hosts(cluster, trained_adapter, peft_adapter):
    gw1, gw2 = cluster.gateway_urls
    e1, e2 = cluster.engine_urls

    # The engine key: an engine refuses anyone without it.
    assert httpx.get(f"{e1}/v1/models", timeout=30).status_code == 401
    assert httpx.post(f"{e2}/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/etc"},
                      timeout=30).status_code == 401

    # Tenant, key and adapter through gateway 1; served through gateway 2.
    assert httpx.post(f"{gw1}/admin/tenants", json={"name": "acme"}, headers=ADMIN).status_code == 201
    key = httpx.post(f"{gw1}/admin/tenants/acme/keys", headers=ADMIN).json()
    auth = {"Authorization": f"Bearer {key['key']}"}
    r = httpx.post(f"{gw1}/v1/adapters/support/versions", headers=auth, timeout=120,
                   files={"file": ("a.tar.gz", tar_dir(trained_adapter), "application/gzip")})
    assert r.status_code == 201, r.text
    reply = chat(gw2, auth, "support")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == lora_training.FIXED_REPLY
    engine_name = "acme.support.v1"
    holders = [url for url in (e1, e2) if engine_name in engine_adapters(url)]
    assert holders, "no engine loaded the adapter"

    # Kill the engine that holds it, under load through gateway 2.
    victim = 0 if holders[0] == e1 else 1
    survivor_url = cluster.engine_urls[1 - victim]
    statuses: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status = chat(gw2, auth, "support", timeout=60).status_code
            except httpx.HTTPError:
                status = -1
            statuses.append((time.monotonic(), status))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        workers = [pool.submit(load) for _ in range(4)]
        time.sleep(2)
        killed_at = time.monotonic()
        cluster.engine_hosts[victim].kill_all()
        time.sleep(15)
        stop.set()
        for w in workers:
            w.result()
    counts = Counter(s for _, s in statuses)
    assert set(counts) <= {200, 503}, counts  # never a 500, never a dropped connection
    late = [s for t, s in statuses if t > killed_at + 8]
    assert late and set(late) == {200}, Counter(late)  # the other engine took over
    assert engine_name in engine_adapters(survivor_url)  # it fetched the adapter by itself

    # The killed engine comes back and serves again when the other one goes: the gateway's
    # health check puts it back and it fetches what it is asked for, nothing restored by hand.
    cluster.start_engine(victim)
    time.sleep(6)  # one gateway health-check period
    cluster.engine_hosts[1 - victim].kill_all()
    until(lambda: chat(gw2, auth, "support").status_code == 200, 30, "the restarted engine serves")
    assert engine_name in engine_adapters(cluster.engine_urls[victim])
    cluster.start_engine(1 - victim)  # both engines up again for the promotion below

    # A promotion through gateway 1 is served by gateway 2 within 2 s.
    r = httpx.post(f"{gw1}/v1/adapters/support/versions", headers=auth, timeout=120,
                   files={"file": ("b.tar.gz", tar_dir(peft_adapter), "application/gzip")})
    assert r.status_code == 201, r.text
    version = r.json()["version"]
    assert version == 2
    r = httpx.post(f"{gw1}/v1/adapters/support/promote", json={"version": version}, headers=auth,
                   timeout=300)
    assert r.status_code == 200, r.text
    promoted_at = time.monotonic()
    answers = probe_every(0.1, 3.0, lambda: chat(gw2, auth, "support", max_tokens=1))
    assert {status for _, status, _ in answers} == {200}, answers  # no failed request in the swap
    switched = [sent - promoted_at for sent, _, model in answers if model == "support@v2"]
    assert switched, f"gateway 2 never served support@v2: {answers}"
    assert min(switched) < 2.0, answers
    assert all(model == "support@v2" for sent, _, model in answers
               if sent - promoted_at > min(switched) + SYNC_INTERVAL_S), answers

    # A key revoked through gateway 1 is refused by gateway 2 within the bound.
    assert chat(gw2, auth, "support").status_code == 200  # cached on gateway 2
    assert httpx.delete(f"{gw1}/admin/tenants/acme/keys/{key['id']}", headers=ADMIN).status_code == 200
    until(lambda: chat(gw2, auth, "support", max_tokens=1).status_code == 401, SYNC_INTERVAL_S + 1.5,
          "gateway 2 refuses the revoked key")

    # A fine-tuning job created through gateway 2 trains on the Ray cluster (one worker on each
    # node; its inputs, progress and checkpoints in S3) and its version is served by gateway 1.
    auth = {"Authorization": "Bearer " + httpx.post(f"{gw1}/admin/tenants/acme/keys",
                                                    headers=ADMIN).json()["key"]}
    job = fine_tune(gw2, auth, "colour")
    assert job["status"] == "succeeded", job
    events = httpx.get(f"{gw2}/v1/fine_tuning/jobs/{job['id']}/events?limit=200", headers=auth,
                       timeout=30).json()["data"]
    messages = [e["message"] for e in events]
    assert any("submitted to the ray runner" in m for m in messages), messages
    started = next(e["data"] for e in events if (e.get("data") or {}).get("num_workers"))
    assert started["num_workers"] == 2, started
    ray_jobs = httpx.get(f"{cluster.ray_dashboard}/api/jobs/", timeout=30).json()
    ours = [j for j in ray_jobs if j.get("submission_id") == f"tuneloop-{job['id']}"]
    assert ours and ours[0]["status"] == "SUCCEEDED", ray_jobs
    checkpoints = s3_listing(cluster.s3, f"jobs/{job['id']}/ray")
    assert any("/checkpoint-" in path for path in checkpoints), checkpoints
    reply = chat(gw1, auth, job["fine_tuned_model"], max_tokens=8)
    assert reply.status_code == 200 and reply.json()["model"] == "colour@v1", reply.text

    # The monitor on a host of its own: corrections of colour@v1's replies are new labels, its
    # policy retrains on them (on the Ray cluster), the gate passes, and the promotion is served
    # by both gateways with nothing else touched.
    policy = {"min_new_labels": 8, "on_drift": False, "on_quality_drop": False,
              "cooldown_hours": 0, "auto_promote": True, "gate_tolerance": 1.0}
    r = httpx.put(f"{gw1}/v1/adapters/colour/policy", json=policy, headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    replies = [httpx.post(f"{gw2}/v1/chat/completions", headers=auth, timeout=120, json={
        "model": "colour", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": f"Which colour is thing number {i}?"}]})
        for i in range(20)]  # distinct prompts: the compiled dataset deduplicates
    assert all(r.status_code == 200 for r in replies)
    feedback = {"data": [{"response_id": r.json()["id"], "correction": "ANSWER: blue",
                          "id": f"fix-{r.json()['id']}"} for r in replies]}  # idempotent

    def send_feedback() -> bool:  # gateway 2 logs its responses in batches: retry until stored
        r = httpx.post(f"{gw1}/v1/feedback", headers=auth, timeout=60, json=feedback)
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200

    until(send_feedback, 30, "feedback on gateway 2's responses is accepted by gateway 1")
    cluster.start_monitor()

    def champion() -> int | None:
        adapter = httpx.get(f"{gw2}/v1/adapters/colour", headers=auth, timeout=30).json()
        return adapter.get("champion_version")

    until(lambda: champion() == 2, 900, "the monitor's retrain is promoted")
    retrains = httpx.get(f"{gw1}/v1/adapters/colour/retrains", headers=auth,
                         timeout=30).json()["data"]
    assert retrains and retrains[0]["status"] == "promoted", retrains
    retrain_job = httpx.get(f"{gw1}/v1/fine_tuning/jobs/{retrains[0]['job_id']}", headers=auth,
                            timeout=30).json()
    assert retrain_job["status"] == "succeeded", retrain_job
    ray_jobs = httpx.get(f"{cluster.ray_dashboard}/api/jobs/", timeout=30).json()
    assert any(j.get("submission_id") == f"tuneloop-{retrain_job['id']}"
               and j["status"] == "SUCCEEDED" for j in ray_jobs), ray_jobs
    until(lambda: chat(gw1, auth, "colour", max_tokens=1).json()["model"] == "colour@v2", 5,
          "gateway 1 serves the monitor's promotion")


def fine_tune(gateway: str, auth: dict, suffix: str, timeout_s: float = 900) -> dict:
    """Upload a tiny chat dataset, create a job through ``gateway`` and wait until it ends."""
    rows = [{"messages": [{"role": "user", "content": f"Name a colour ({i})."},
                          {"role": "assistant", "content": "ANSWER: blue"}]} for i in range(12)]
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    r = httpx.post(f"{gateway}/v1/files", headers=auth, data={"purpose": "fine-tune"},
                   files={"file": ("colours.jsonl", data)}, timeout=60)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{gateway}/v1/fine_tuning/jobs", headers=auth, timeout=60, json={
        "model": "base", "training_file": r.json()["id"], "suffix": suffix, "task": "chat",
        "hyperparameters": {"n_epochs": 1, "batch_size": 2, "max_length": 64}})
    assert r.status_code == 200, r.text
    job = r.json()
    deadline = time.monotonic() + timeout_s
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(2)
        job = httpx.get(f"{gateway}/v1/fine_tuning/jobs/{job['id']}", headers=auth,
                        timeout=30).json()
    return job


def s3_listing(s3, prefix: str) -> list[str]:  # noqa: ANN001
    import fsspec

    fs = fsspec.filesystem("s3", key=s3.env["AWS_ACCESS_KEY_ID"],
                           secret=s3.env["AWS_SECRET_ACCESS_KEY"],
                           client_kwargs={"endpoint_url": s3.url,
                                          "region_name": s3.env["AWS_DEFAULT_REGION"]})
    root = s3.artifacts_url.removeprefix("s3://").rstrip("/")
    return fs.find(f"{root}/{prefix}")
