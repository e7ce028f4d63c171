"""Feedback ingestion and request-log overhead, measured side by side in one run.

- Feedback ingestion: the real app (``create_app`` + the serving gateway, without an engine) under
  uvicorn in its own process on 127.0.0.1; 64 concurrent clients (keep-alive connections spread
  over ``--client-procs`` processes of a minimal HTTP/1.1 client, so the client does not share the server's GIL) post
  single feedback events, then batches of 50, on SQLite and, if asked, PostgreSQL. Every event
  is counted back from the store (lost = acknowledged - stored) and every response is checked.
- Request-log overhead: the time ``RequestLog.record()`` adds to a request (the only request-log
  work on the request path), p50/p99, while the writer thread is busy writing to the store.

Usage: python benchmarks/loop.py [--events 20000] [--clients 64] [--client-procs 2]
       [--postgres-url postgresql+psycopg://... | --start-postgres] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, insert, select

from monitoring.metrics import Metrics
from monitoring.request_log import LogRecord, RequestLog
from services.platform import Platform
from services.settings import Settings
from services.store.models import FeedbackRecord, RequestRecord
from services.tenants import create_key, create_tenant

MODEL = ROOT / ".tuneloop" / "models" / "SmolLM2-135M-Instruct"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(database_url: str | None, data_dir: Path, port: int = 8000) -> Settings:
    return Settings(data_dir=data_dir, database_url=database_url, base_model=str(MODEL),
                    admin_key="bench", port=port, engine_port=_free_port())


# --- server process -------------------------------------------------------------------------


def serve(database_url: str | None, data_dir: Path, port: int, profile: str | None,
          engine_url: str | None = None, request_log: bool = True) -> None:
    """Run the real app (platform API + gateway) until SIGTERM. Without ``engine_url`` the engine
    URL is one nobody listens on: the gateway runs with its engine down (feedback needs none)."""
    import signal

    import uvicorn

    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    settings = _settings(database_url, data_dir, port).model_copy(
        update={"engine_urls": [engine_url or f"http://127.0.0.1:{_free_port()}"],
                "tenant_rate_per_s": 1e6, "tenant_max_concurrency": 1000})
    # request_log=False: the A/B baseline, the same gateway with its request log switched off
    app = create_app(settings, serve=ServeOptions(spawn_engine=False, request_log=request_log))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    server.run()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)


@contextmanager
def server_process(database_url: str | None, data_dir: Path, profile: str | None = None,
                   engine_url: str | None = None, request_log: bool = True):
    import urllib.request

    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", "--port", str(port), "--data-dir", str(data_dir)]
    if database_url:
        cmd += ["--database-url", database_url]
    if profile:
        cmd += ["--profile", profile]
    if engine_url:
        cmd += ["--engine-url", engine_url]
    if not request_log:
        cmd += ["--no-request-log"]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}") from None
                time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(60)


# --- client processes -----------------------------------------------------------------------


def _client_proc(url: str, key: str, bodies: list[bytes], connections: int, start, out,
                 path: str = "/v1/feedback") -> None:
    """``connections`` keep-alive HTTP/1.1 connections posting ``bodies``; a minimal client on
    uvloop, so that the client's CPU (same 2 cores) takes as little as possible from the server."""
    import uvloop

    host, port = url.removeprefix("http://").split(":")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: ").encode()

    async def exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
        writer.write(request)
        header = await reader.readuntil(b"\r\n\r\n")
        status = int(header[9:12])
        at = header.lower().index(b"content-length:") + 15
        body = await reader.readexactly(int(header[at:header.index(b"\r\n", at)]))
        return status, body

    async def run() -> None:
        pending = list(reversed(bodies))
        latencies: list[float] = []
        bad: list[str] = []
        conns = [await asyncio.open_connection(host, int(port)) for _ in range(connections)]
        for reader, writer in conns:  # each connection is open and answered before the clock starts
            await exchange(reader, writer, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())

        async def worker(reader, writer) -> None:
            while pending:
                body = pending.pop()
                t0 = time.perf_counter()
                status, text = await exchange(reader, writer, head + str(len(body)).encode() + b"\r\n\r\n" + body)
                if status not in (200, 201):
                    bad.append(f"{status} {text[:200]!r}")
                latencies.append(time.perf_counter() - t0)

        start.wait()
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(r, w) for r, w in conns))
        out.put((time.time() - (time.perf_counter() - t0), time.time(), latencies, bad,
                 time.process_time() - cpu0))
        for _, writer in conns:
            writer.close()

    uvloop.run(run())


def ingest(url: str, key: str, response_ids: list[str], events: int, clients: int, batch: int,
           procs: int, tag: str) -> tuple[float, list[float], list[str]]:
    """Send ``events`` feedback events in requests of ``batch``; (seconds, latencies, errors)."""
    import json

    bodies = []
    for i in range(0, events, batch):
        items = [{"response_id": response_ids[j % len(response_ids)], "rating": 1 if j % 3 else -1,
                  "id": f"{tag}-{j}"} for j in range(i, min(events, i + batch))]
        bodies.append(json.dumps(items[0] if batch == 1 else {"data": items}).encode())
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    share = [clients // procs + (1 if p < clients % procs else 0) for p in range(procs)]
    workers = [ctx.Process(target=_client_proc,
                           args=(url, key, bodies[p::procs], share[p], start, out))
               for p in range(procs)]
    for w in workers:
        w.start()
    time.sleep(3.0)  # let every process import and connect
    start.set()
    results = [out.get() for _ in workers]
    ingest.client_cpu_s = sum(r[4] for r in results)
    for w in workers:
        w.join()
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    return ended - began, [x for r in results for x in r[2]], [x for r in results for x in r[3]]


def feedback_ingestion(name: str, database_url: str | None, events: int, clients: int,
                       procs: int, profile_dir: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Platform.open(_settings(database_url, Path(tmp)))
        with p.store.write() as s:
            tenant = create_tenant(s, "bench-" + uuid.uuid4().hex[:6])
            key = create_key(s, tenant.name).key
            tenant_id = tenant.id
        ids = [f"resp-{uuid.uuid4().hex}" for _ in range(1000)]
        with p.store.write() as s:
            s.execute(insert(RequestRecord), [
                {"id": i, "tenant_id": tenant_id, "route": "chat", "status": 200, "input": "x",
                 "output": "y", "latency_ms": 1.0, "prompt_tokens": 1, "completion_tokens": 1}
                for i in ids])
        profile = str(Path(profile_dir) / f"server-{name}.prof") if profile_dir else None
        with server_process(database_url, Path(tmp), profile) as (url, pid):
            import psutil

            server = psutil.Process(pid)
            for batch in (1, 50):
                tag = f"b{batch}"
                cpu0 = sum(server.cpu_times()[:2])
                elapsed, lat, bad = ingest(url, key, ids, events, clients, batch, procs, tag)
                server_cpu = sum(server.cpu_times()[:2]) - cpu0
                with p.store.read() as s:
                    stored = s.scalar(select(func.count()).select_from(FeedbackRecord)
                                      .where(FeedbackRecord.id.like(f"t{tenant_id}:{tag}-%")))
                lat.sort()
                acked = events if not bad else None
                print(f"{name:10s} batch={batch:<3d} {events} events, {clients} clients: "
                      f"{events / elapsed:8.0f} events/s ({len(lat) / elapsed:6.0f} requests/s), "
                      f"request p50 {statistics.median(lat) * 1000:.1f} ms p99 "
                      f"{lat[int(0.99 * len(lat))] * 1000:.1f} ms; stored {stored}, "
                      f"lost {events - stored}, failed requests {len(bad)}; CPU per request: "
                      f"server {server_cpu / len(lat) * 1e3:.2f} ms, clients "
                      f"{ingest.client_cpu_s / len(lat) * 1e3:.2f} ms; load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
                if bad or acked != stored:
                    print("  errors:", bad[:3])
        p.close()


class _FakeEngine:
    """A stand-in for vLLM answering instantly, so the gateway's own cost is what is measured."""

    def __init__(self, model: str):
        import json
        import socket
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        reply = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "Sure, here is a reply."}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36},
        }).encode()
        models = json.dumps({"object": "list", "data": [{"id": model, "object": "model"}]}).encode()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm and
                # delayed ACKs add ~40 ms to every engine reply.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _send(self, body: bytes) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(models if self.path.startswith("/v1/models") else b"{}")

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self._send(reply if self.path.endswith("/chat/completions") else b"{}")

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                pass  # gateways closing their connections at exit

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def request_log_http_overhead(requests: int, concurrency: int, rounds: int) -> None:
    """Chat request latency through the real gateway, request log on vs off (interleaved rounds)."""
    import json

    with tempfile.TemporaryDirectory() as tmp:
        p = Platform.open(_settings(None, Path(tmp)))
        with p.store.write() as s:
            create_tenant(s, "bench")
            key = create_key(s, "bench").key
        model = p.base_model_name
        p.close()
        engine = _FakeEngine(model)
        text = "My email is jane.doe@example.com, call me at +1 415 555 0100. " * 4
        body = json.dumps({"model": model, "max_tokens": 6,
                           "messages": [{"role": "user", "content": text}]}).encode()
        latencies: dict[bool, list[float]] = {True: [], False: []}
        ctx = mp.get_context("spawn")
        with server_process(None, Path(tmp), engine_url=engine.url) as (on_url, _), \
                server_process(None, Path(tmp), engine_url=engine.url, request_log=False) as (off_url, _):
            for r in range(rounds + 1):
                for logged, url in ((True, on_url), (False, off_url)):
                    start, out = ctx.Event(), ctx.Queue()
                    proc = ctx.Process(target=_client_proc, args=(
                        url, key, [body] * requests, concurrency, start, out, "/v1/chat/completions"))
                    proc.start()
                    start.set()
                    _, _, lat, bad, _ = out.get()
                    proc.join()
                    if bad:
                        raise RuntimeError(f"chat requests failed: {bad[:3]}")
                    if r > 0:  # round 0 warms both servers up
                        latencies[logged] += lat
        p = Platform.open(_settings(None, Path(tmp)))
        with p.store.read() as s:
            logged_rows = s.scalar(select(func.count()).select_from(RequestRecord))
        p.close()
        engine.close()
    on, off = sorted(latencies[True]), sorted(latencies[False])
    p50_on, p50_off = statistics.median(on) * 1000, statistics.median(off) * 1000
    print(f"request log, chat through the gateway ({concurrency} concurrent, instant fake engine, "
          f"{len(on)} requests each): p50 {p50_on:.2f} ms with the log vs {p50_off:.2f} ms without "
          f"(overhead {p50_on - p50_off:+.2f} ms); p99 {on[int(0.99 * len(on))] * 1000:.2f} vs "
          f"{off[int(0.99 * len(off))] * 1000:.2f} ms; rows logged {logged_rows} "
          f"(= {(rounds + 1) * requests} sent to the logging gateway)", flush=True)


def request_log_overhead(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        p = Platform.open(_settings(None, Path(tmp)))
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
              f"written {written}, dropped {log.dropped}", flush=True)
        p.close()


@contextmanager
def started_postgres():
    """A throwaway PostgreSQL cluster (fsync on: acknowledged means durable) under /tmp."""
    import shutil

    bindir = max(Path("/usr/lib/postgresql").glob("*/bin/initdb")).parent
    root = Path(tempfile.mkdtemp(prefix="tuneloop-pg-bench-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    as_user = []
    if os.geteuid() == 0:
        os.chmod(root, 0o777)
        os.chmod(sock, 0o777)
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "tuneloop"],
                   check=True, capture_output=True)
    port = _free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l",
                    str(root / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(f"postgresql+psycopg://tuneloop@127.0.0.1:{port}/postgres",
                              isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text('CREATE DATABASE "bench"'))
        admin.dispose()
        yield f"postgresql+psycopg://tuneloop@127.0.0.1:{port}/bench"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                       capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--postgres-url", default=None, help="a database URL to test PostgreSQL")
    parser.add_argument("--start-postgres", action="store_true",
                        help="start a throwaway PostgreSQL (Debian packages) for the run")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-log", action="store_true", help="skip the request-log measurement")
    parser.add_argument("--profile", default=None, help="write cProfile stats of the server here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--engine-url", help=argparse.SUPPRESS)
    parser.add_argument("--no-request-log", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--log-requests", type=int, default=1000,
                        help="chat requests per round of the request-log A/B")
    args = parser.parse_args()
    if args.serve:
        serve(args.database_url, Path(args.data_dir), args.port, args.profile, args.engine_url,
              not args.no_request_log)
        return
    if not args.skip_sqlite:
        feedback_ingestion("sqlite", None, args.events, args.clients, args.client_procs, args.profile)
    if args.start_postgres:
        with started_postgres() as url:
            feedback_ingestion("postgresql", url, args.events, args.clients, args.client_procs,
                               args.profile)
    elif args.postgres_url:
        feedback_ingestion("postgresql", args.postgres_url, args.events, args.clients,
                           args.client_procs, args.profile)
    if not args.skip_log:
        request_log_overhead(20_000)
        for concurrency in (1, 16):
            request_log_http_overhead(args.log_requests, concurrency, 3)


if __name__ == "__main__":
    main()
