"""The console against a real ``tuneloop serve`` on the session's real vLLM engine: promote and
roll back with the buttons and /v1/chat/completions answers with the new, then the old version;
the playground streams the engine's reply; the adapter page lists those requests with their
feedback."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from services.adapter_intake import register_adapter_dir
from tests.support import lora_training
from tests.support.api import tenant_key
from tests.tuneloop.ui.conftest import LiveServer
from tests.tuneloop.ui.test_console import bearer, login

pytestmark = [pytest.mark.integration, pytest.mark.engine]

# Used by no other test of the session: the engine knows adapters by tenant.name.vN.
TENANT = "console-engine"
PROMPT = "Say something."
MAX_TOKENS = 12
SWAP_TIMEOUT_MS = 120_000  # a promote loads the version on the engine and probes it first


def chat(server: LiveServer, headers: dict, model: str) -> tuple[str, str, str]:
    """(served model, greedy reply, response id) of a short chat request."""
    r = server.http.post("/v1/chat/completions", headers=headers, timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0, "max_tokens": MAX_TOKENS})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["model"], body["choices"][0]["message"]["content"], body["id"]


def test_promote_rollback_and_playground_on_the_real_engine(page, real_serving_server,
                                                            trained_adapter, lora_factory):
    server = real_serving_server
    key = tenant_key(server.http, TENANT)
    # v1 learned a fixed reply; v2 is a LoRA with zero B matrices: it replies like the base model.
    register_adapter_dir(server.platform, TENANT, "support", trained_adapter)
    register_adapter_dir(server.platform, TENANT, "support", lora_factory(8))
    served, v1_reply, _ = chat(server, key, "support")
    assert served == "support@v1"
    assert v1_reply.startswith(lora_training.FIXED_REPLY[:15]), v1_reply  # 12 tokens may cut it
    _, v2_reply, _ = chat(server, key, "support@v2")
    assert v2_reply != v1_reply, "the two versions must answer differently"

    login(page, server, bearer(key))
    page.click("a.adapter-link:text('support')")
    expect(page.locator("#champion")).to_have_text("support@v1")

    page.once("dialog", lambda d: d.accept())
    page.click("button.promote[data-version='2']")
    expect(page.locator("#champion")).to_have_text("support@v2", timeout=SWAP_TIMEOUT_MS)
    assert chat(server, key, "support")[:2] == ("support@v2", v2_reply)

    page.once("dialog", lambda d: d.accept())
    page.click("#rollback")
    expect(page.locator("#champion")).to_have_text("support@v1", timeout=SWAP_TIMEOUT_MS)
    assert chat(server, key, "support")[:2] == ("support@v1", v1_reply)

    page.click("#nav a:text('Playground')")
    page.select_option("#chat-model", "support")
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", str(MAX_TOKENS))
    page.fill("#chat-input", PROMPT)
    page.click("#chat-send")
    expect(page.locator("#chat-served")).to_have_text("answered by support@v1", timeout=60_000)
    expect(page.locator(".msg.assistant")).to_have_text(v1_reply)

    # The requests above are in the request log (written in the background): rate the latest
    # API reply and the adapter page shows it with its feedback.
    _, _, response_id = chat(server, key, "support")
    r = server.http.post("/v1/feedback", headers=key, json={
        "response_id": response_id, "rating": -1, "correction": "Hello there!"})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 30
    while len(server.http.get("/v1/adapters/support/requests", headers=key).json()["data"]) < 6:
        assert time.monotonic() < deadline, "the request log did not write the requests"
        time.sleep(0.2)
    page.goto(f"{server.url}/ui#/adapters/support")
    rows = page.locator("#latest-requests tbody tr")
    expect(rows).to_have_count(6)
    newest = rows.first
    expect(newest).to_contain_text("support@v1")
    expect(newest).to_contain_text(PROMPT)
    expect(newest).to_contain_text(v1_reply)
    expect(newest.locator(".rating")).to_have_text("bad")
    expect(newest).to_contain_text("correction: Hello there!")
    expect(page.locator("#latest-requests")).to_contain_text("support@v2")
