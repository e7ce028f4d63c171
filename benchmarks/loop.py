"""Feedback ingestion and request-log overhead, measured side by side in one run.

- Feedback ingestion: the real app under uvicorn on 127.0.0.1, 64 concurrent clients posting
  single feedback events (and, separately, batches of 50), on SQLite and, if a URL is given,
  PostgreSQL; every event is counted back from the store (lost = sent - stored).
- Request-log overhead: the time ``RequestLog.record()`` adds to a request (the only request-log
  work on the request path), p50/p99, while the writer thread is busy writing to the store.

Usage: python benchmarks/loop.py [--events 4000] [--postgres-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from monitoring.metrics import Metrics  # noqa: E402
from monitoring.request_log import LogRecord, RequestLog  # noqa: E402
from services.app import create_app  # noqa: E402
from services.platform import Platform  # noqa: E402
from services.settings import Settings  # noqa: E402
from services.store.models import FeedbackRecord, RequestRecord  # noqa: E402
from services.tenants import create_key, create_tenant  # noqa: E402


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _platform(database_url: str | None, data_dir: Path) -> Platform:
    model = ROOT / ".tuneloop" / "models" / "SmolLM2-135M-Instruct"
    return Platform.open(Settings(data_dir=data_dir, database_url=database_url, base_model=str(model),
                                  admin_key="bench"))


async def _ingest(url: str, key: str, response_ids: list[str], events: int, clients: int,
                  batch: int) -> float:
    queue: asyncio.Queue = asyncio.Queue()
    for i in range(0, events, batch):
        queue.put_nowait([
            {"response_id": response_ids[j % len(response_ids)], "rating": 1, "id": f"e{j}"}
            for j in range(i, min(events, i + batch))
        ])
    errors = 0

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            items = queue.get_nowait()
            body = items[0] if batch == 1 else {"data": items}
            r = await http.post("/v1/feedback", json=body)
            if r.status_code not in (200, 201):
                errors += 1

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 limits=limits, timeout=60) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    if errors:
        print(f"  {errors} requests failed")
    return elapsed


def feedback_ingestion(name: str, database_url: str | None, events: int, clients: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = _platform(database_url, Path(tmp))
        with p.store.write() as s:
            tenant = create_tenant(s, "bench-" + uuid.uuid4().hex[:6])
            key = create_key(s, tenant.name).key
            tenant_id = tenant.id
        ids = [f"resp-{uuid.uuid4().hex}" for _ in range(200)]
        with p.store.write() as s:
            s.execute(insert(RequestRecord), [
                {"id": i, "tenant_id": tenant_id, "route": "chat", "status": 200, "input": "x",
                 "output": "y", "latency_ms": 1.0, "prompt_tokens": 1, "completion_tokens": 1}
                for i in ids])
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(platform=p), port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        for batch in (1, 50):
            with p.store.write() as s:
                s.query(FeedbackRecord).delete()
            elapsed = asyncio.run(_ingest(f"http://127.0.0.1:{port}", key, ids, events, clients, batch))
            with p.store.read() as s:
                stored = s.scalar(select(func.count()).select_from(FeedbackRecord))
            print(f"{name:10s} batch={batch:<3d} {events} events, {clients} clients: "
                  f"{events / elapsed:8.0f} events/s, stored {stored}, lost {events - stored}")
        server.should_exit = True
        thread.join(10)
        p.close()


def request_log_overhead(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = _platform(None, Path(tmp))
        log = RequestLog(p.store, Metrics())
        log.start()
        durations = []
        for i in range(n):
            rec = LogRecord(id=f"r{i}", tenant_id=1, route="chat", status=200, adapter="a",
                            adapter_version=1, input=[{"role": "user", "content": "hello " * 20}],
                            output="reply " * 20, latency_ms=10, prompt_tokens=30, completion_tokens=20)
            t0 = time.perf_counter()
            log.record(rec)
            durations.append(time.perf_counter() - t0)
        log.flush(60)
        with p.store.read() as s:
            written = s.scalar(select(func.count()).select_from(RequestRecord))
        log.stop()
        durations.sort()
        p50 = statistics.median(durations) * 1e6
        p99 = durations[int(0.99 * len(durations))] * 1e6
        print(f"request log: record() p50 {p50:.1f} us, p99 {p99:.1f} us over {n} records; "
              f"written {written}, dropped {log.dropped}")
        p.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--postgres-url", default=None, help="a database URL to test PostgreSQL")
    args = parser.parse_args()
    feedback_ingestion("sqlite", None, args.events, args.clients)
    if args.postgres_url:
        feedback_ingestion("postgresql", args.postgres_url, args.events, args.clients)
    request_log_overhead(20_000)


if __name__ == "__main__":
    main()
