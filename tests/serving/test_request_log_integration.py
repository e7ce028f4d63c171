"""The request log in the real gateway (session vLLM engine, SQLite store on disk).

- It survives a gateway restart: entries still buffered when the gateway stops are written
  before it exits, and feedback after the restart refers to responses served before it.
- Requests keep succeeding while the log's store is unavailable (the database write-locked by
  another connection); every entry that could not be stored is counted on ``/metrics``; logging
  resumes when the store comes back.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import httpx
import pytest
from sqlalchemy import select

from services.platform import Platform
from services.settings import Settings
from services.store.models import RequestRecord
from tests.support import lora_training
from tests.support.engine import serving_on
from tests.support.engine_key import ENGINE_AUTH

pytestmark = [pytest.mark.integration, pytest.mark.engine]


class Gateway:
    """The real app (platform API + serving gateway) under uvicorn in a thread."""

    def __init__(self, settings: Settings):
        import uvicorn

        from tuneloop.app import create_app
        from tuneloop.state import ServeOptions

        self.platform = Platform.open(settings)
        self.app = create_app(platform=self.platform, serve=ServeOptions())
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=settings.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{settings.port}"

    def __enter__(self) -> Gateway:  # noqa: PYI034
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """A clean shutdown, as on SIGTERM: the lifespan runs to its end."""
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "gateway did not stop"
        self.platform.close()

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.stop()

    @property
    def request_log(self):
        return self.app.state.tuneloop.gateway.request_log


@pytest.fixture(scope="module")
def world(engine, engine_settings, base_model_dir, trained_adapter, tmp_path_factory):
    from services.adapter_intake import register_adapter_dir
    from services.tenants import create_key, create_tenant
    from serving.engine_process import free_port

    settings = Settings(
        data_dir=tmp_path_factory.mktemp("log-gateway"), base_model=str(base_model_dir),
        admin_key="admin-log", port=free_port(), tenant_rate_per_s=1000,
        **serving_on(engine, engine_settings),
    )
    platform = Platform.open(settings)
    with platform.store.write() as s:
        create_tenant(s, "acme")
        key = create_key(s, "acme").key
    register_adapter_dir(platform, "acme", "support", trained_adapter)
    register_adapter_dir(platform, "acme", "topics", trained_adapter, task="classification",
                         labels=lora_training.CLASSIFY_LABELS)
    platform.close()
    return settings, {"Authorization": f"Bearer {key}"}


def _chat(http: httpx.Client, text: str) -> str:
    r = http.post("/v1/chat/completions", json={
        "model": "support", "messages": [{"role": "user", "content": text}], "max_tokens": 3})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _classify(http: httpx.Client, text: str) -> str:
    r = http.post("/v1/classify", json={"model": "topics", "input": text})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _stored(settings: Settings, ids: list[str]) -> set[str]:
    p = Platform.open(settings, migrate=False)
    try:
        with p.store.read() as s:
            return set(s.scalars(select(RequestRecord.id).where(RequestRecord.id.in_(ids))))
    finally:
        p.close()


class WriteLock:
    """Another connection holding SQLite's write lock: the store refuses writes until release."""

    def __init__(self, settings: Settings):
        path = settings.resolved_database_url.split("///", 1)[1]
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _dropped(http: httpx.Client) -> float:
    text = http.get("/metrics", headers=ENGINE_AUTH).text
    return sum(float(v) for v in re.findall(r'^tuneloop_request_log_dropped_total\{[^}]*\} (\S+)$',
                                             text, re.MULTILINE))


def test_request_log_survives_a_gateway_restart(world):
    settings, auth = world
    with Gateway(settings) as gw, httpx.Client(base_url=gw.url, headers=auth, timeout=120) as http:
        before = [_chat(http, "Say something."), _classify(http, "Sunny with light wind today.")]
        lock = WriteLock(settings)  # the next entries cannot be written: they stay buffered
        buffered = [_chat(http, "Tell me a joke."), _classify(http, "The match ended 2-1.")]
        assert gw.request_log.is_pending(buffered), "entries should still be buffered"
        threading.Timer(1.0, lock.release).start()  # the store comes back while stopping
        gw.stop()  # a clean stop flushes the buffer before the process would exit
    served = before + buffered
    assert _stored(settings, served) == set(served), "entries served before the stop are lost"

    with Gateway(settings) as gw, httpx.Client(base_url=gw.url, headers=auth, timeout=120) as http:
        for rid in served:
            body = {"response_id": rid, "rating": 1, "id": f"after-restart-{rid}"}
            if rid.startswith("clf"):
                body["label"] = "weather"
            r = http.post("/v1/feedback", json=body)
            assert r.status_code == 201, r.text
        assert http.post("/v1/feedback", json={"response_id": served[1], "label": "gardening"}
                         ).status_code == 400, "the label set is still known after the restart"
        after = _chat(http, "Say something.")
        r = http.post("/v1/feedback", json={"response_id": after, "rating": -1})
        assert r.status_code == 201, "feedback right after a response (the gateway flushes the log)"
    p = Platform.open(settings, migrate=False)
    with p.store.read() as s:
        rows = {r.id: r for r in s.scalars(select(RequestRecord).where(RequestRecord.id.in_(served)))}
    p.close()
    assert (rows[served[1]].adapter, rows[served[1]].adapter_version, rows[served[1]].route) == \
        ("topics", 1, "classify")
    assert rows[served[2]].input == [{"role": "user", "content": "Tell me a joke."}]


def test_requests_succeed_while_the_log_store_is_unavailable_and_drops_are_counted(world):
    settings, auth = world
    with Gateway(settings) as gw, httpx.Client(base_url=gw.url, headers=auth, timeout=120) as http:
        _chat(http, "warm up")
        assert gw.request_log.flush(30)
        dropped_before = _dropped(http)
        gw.request_log.max_pending = 3  # a small buffer, so that it overflows in a few requests
        lock = WriteLock(settings)
        try:
            served = [_chat(http, f"Say something {i}.") for i in range(6)]
            served += [_classify(http, "It will rain tomorrow.") for _ in range(4)]
            # Every request above returned 200 while the store refused writes: none waited on it.
            assert gw.request_log.pending <= 3
        finally:
            lock.release()
        assert gw.request_log.flush(60)
        stored = _stored(settings, served)
        lost = len(served) - len(stored)
        # Only the 3 buffered entries and the batch the writer held when it hit the lock survive.
        assert lost > 0
        assert _dropped(http) - dropped_before == lost, "every entry not stored is counted"
        resumed = [_chat(http, "Say something."), _classify(http, "Snow is expected.")]
        assert gw.request_log.flush(30)
        assert _stored(settings, resumed) == set(resumed), "logging resumes when the store is back"
        assert _dropped(http) - dropped_before == lost
