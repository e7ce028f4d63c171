"""Fixtures of the console tests: the platform API served by uvicorn on a free port (no engine)
and headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"


@dataclass
class LiveServer:
    url: str
    platform: object
    http: httpx.Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(platform):
    """The app (platform API + console, no serving) on 127.0.0.1; jobs are validated, never run."""
    import uvicorn

    from tuneloop.app import create_app

    app = create_app(platform=platform, jobs={"concurrency": 0, "poll_s": 0.05})
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
    with httpx.Client(base_url=url, timeout=30) as http:
        yield LiveServer(url=url, platform=platform, http=http)
    server.should_exit = True
    thread.join(timeout=30)


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
