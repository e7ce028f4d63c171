"""Fixtures of the console tests: the platform API served by uvicorn on a free port (without
serving, with the gateway over a stand-in engine, or over the session's real vLLM engine from
tests/support/engine.py) and headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from services.platform import Platform

CHROMIUM = "/usr/bin/chromium"


@dataclass
class LiveServer:
    url: str
    platform: Platform
    http: httpx.Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(app, platform) -> Iterator[LiveServer]:  # noqa: ANN001
    """Run ``app`` under uvicorn on a free port of 127.0.0.1 until the context ends."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the console's uvicorn server did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            yield LiveServer(url=url, platform=platform, http=http)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def live_server(platform):
    """The app (platform API + console, no serving) on 127.0.0.1; jobs are validated, never run."""
    from tuneloop.app import create_app

    app = create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 0.05})
    with _serve(app, platform) as server:
        yield server


@pytest.fixture
def fake_engine_url():
    """The supervisor tests' stand-in engine (answers /health and every POST) on a thread."""
    from http.server import ThreadingHTTPServer

    from tests.support.fake_engine import Handler

    engine = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=engine.serve_forever, name="fake-engine", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{engine.server_address[1]}"
    engine.shutdown()
    engine.server_close()


@pytest.fixture
def serving_server(make_settings, fake_engine_url):
    """Like ``live_server`` with the gateway on: one engine (the stand-in, so adapters "load" and
    hot swaps pass their probe, but nothing generates) and no request log."""
    from services.platform import Platform
    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    platform = Platform.open(make_settings(engine_urls=[fake_engine_url]))
    app = create_app(platform=platform, serve=ServeOptions(request_log=False),
                     jobs={"concurrency": 0, "poll_s": 0.05})
    try:
        with _serve(app, platform) as server:
            yield server
    finally:
        platform.close()


@pytest.fixture
def real_serving_server(make_settings, engine, engine_settings):
    """Like ``serving_server`` over the session's real vLLM engine, with the request log on.
    The engine knows adapters by ``tenant.name.vN`` whatever the store: tests on it use tenant
    names no other test of the session uses, so no name is loaded with other weights."""
    from services.platform import Platform
    from tests.support.engine import serving_on
    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    platform = Platform.open(make_settings(**serving_on(engine, engine_settings)))
    app = create_app(platform=platform, serve=ServeOptions(),
                     jobs={"concurrency": 0, "poll_s": 0.05})
    try:
        with _serve(app, platform) as server:
            yield server
    finally:
        platform.close()


@pytest.fixture(scope="package")
def browser():
    """Headless Debian Chromium (never Playwright's downloaded browsers). Package scope:
    Playwright's sync API keeps an event loop running in the main thread while it is open,
    which would break every later test that calls ``asyncio.run``."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing; run `bash scripts/system-deps.sh` "
                    "(apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (empty session storage); fails the test on a CSP violation or a
    page error, and on any dialog the test did not expect."""
    context = browser.new_context()
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: m.type == "error" and "Content Security Policy" in m.text
            and page.problems.append(m.text))
    page.on("pageerror", lambda exc: page.problems.append(f"page error: {exc}"))
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert not page.problems, page.problems
