"""The console's adapter, version, new-job and operator pages in a real browser (headless Debian
Chromium) against the real app: the policy form's inline API messages, the dataset check before a
job exists, the engines of a serving app, and every page drawn from production-shaped data.

``TUNELOOP_CONSOLE_SCREENSHOTS=docs/console`` makes the last test save its PNGs there (the
pictures of docs/console.md); without it they go to the test's temporary directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from services.adapter_intake import register_adapter_dir
from tests.support.api import ADMIN_HEADERS, classification_lines, tenant_key
from tests.tuneloop.ui import story
from tests.tuneloop.ui.conftest import LiveServer

pytestmark = pytest.mark.integration

ADMIN_KEY = ADMIN_HEADERS["Authorization"].removeprefix("Bearer ")
BROKEN = (b'{"text": "refund please", "label": "billing"}\n'
          b'{"text": \n'
          b'{"text": "it crashes", "label": "bug"}\n'
          b'{"text": "refund please"}\n')


def login(page: Page, server: LiveServer, headers_or_key: dict | str) -> None:
    key = headers_or_key if isinstance(headers_or_key, str) else \
        headers_or_key["Authorization"].removeprefix("Bearer ")
    page.goto(f"{server.url}/ui")
    page.fill("#login-key", key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#logout")).to_be_visible()


def jsonl_file(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "application/jsonl", "buffer": data}


def test_policy_form_shows_the_api_message_inline_and_saves_a_good_value(page, live_server,
                                                                          peft_adapter):
    acme = tenant_key(live_server.http, "acme")
    register_adapter_dir(live_server.platform, "acme", "support", peft_adapter)
    login(page, live_server, acme)
    page.goto(f"{live_server.url}/ui#/adapters/support")
    expect(page.locator("#policy-status")).to_contain_text("No policy yet")
    defaults = live_server.http.get("/v1/adapters/support/policy", headers=acme).json()["policy"]

    page.fill("#policy-schedule_hours", "-1")
    page.click("#policy-save")
    refused = live_server.http.put("/v1/adapters/support/policy", headers=acme,
                                   json={**defaults, "schedule_hours": -1})
    assert refused.status_code == 400
    expected = refused.json()["error"]["message"].split("schedule_hours: ", 1)[1]
    expect(page.locator("#policy-error-schedule_hours")).to_have_text(expected)
    expect(page.locator(".field.invalid")).to_have_count(1)

    page.fill("#policy-schedule_hours", "12")
    page.fill("#policy-drift_windows_m", "5")  # a cross-field rule: m <= n
    page.click("#policy-save")
    expect(page.locator("#policy-error-drift_windows_m")).to_contain_text(
        "drift_windows_m (5) must be <= drift_windows_n (3)")
    expect(page.locator("#policy-error-schedule_hours")).to_be_hidden()
    assert live_server.http.get("/v1/adapters/support/policy",
                                headers=acme).json()["configured"] is False

    page.fill("#policy-drift_windows_m", "2")
    page.click("#policy-save")
    expect(page.locator("#policy-status")).to_contain_text("Saved")
    expect(page.locator(".field-error:visible")).to_have_count(0)
    stored = live_server.http.get("/v1/adapters/support/policy", headers=acme).json()
    assert stored["configured"] is True
    assert stored["policy"] == {**defaults, "schedule_hours": 12.0}
    expect(page.locator("#policy-schedule_hours")).to_have_value("12")


def test_new_job_form_lists_line_numbered_errors_before_any_job(page, live_server):
    acme = tenant_key(live_server.http, "acme")
    login(page, live_server, acme)
    page.click("#nav a:text('Jobs')")
    page.set_input_files("#job-file", files=[jsonl_file("broken.jsonl", BROKEN)])
    expect(page.locator("#file-issues li[data-line='2']")).to_have_text(
        "line 2: invalid JSON: Expecting value (column 10)")
    expect(page.locator("#file-issues li[data-line='4']")).to_contain_text(
        "missing field(s): label")
    expect(page.locator("#job-fields")).to_be_hidden()
    assert live_server.http.get("/v1/files", headers=acme).json()["data"] == []

    page.set_input_files("#job-file", files=[jsonl_file("tickets.jsonl",
                                                         classification_lines(20))])
    expect(page.locator("#file-ok")).to_be_visible()
    expect(page.locator("#file-issues")).to_have_count(0)
    rows = page.locator("#file-preview tbody tr")
    expect(rows).to_have_count(5)
    expect(rows.first).to_have_text("1example text number 0neg")
    expect(page.locator("#job-suffix")).to_have_value("tickets")

    page.fill("#job-model", "no-such-model")
    page.click("#job-create")
    expect(page.locator("#job-error")).to_be_visible()
    assert live_server.http.get("/v1/fine_tuning/jobs", headers=acme).json()["data"] == []

    page.fill("#job-model", "base")
    page.click("#job-create")
    expect(page.locator("#job-status")).to_be_visible()
    (job,) = live_server.http.get("/v1/fine_tuning/jobs", headers=acme).json()["data"]
    (uploaded,) = live_server.http.get("/v1/files", headers=acme).json()["data"]
    assert (job["suffix"], job["training_file"], job["task"]) == (
        "tickets", uploaded["id"], "classification")
    assert page.url.endswith(f"#/jobs/{job['id']}")


def test_operator_sees_engines_the_job_queue_and_monitor_decisions(page, serving_server,
                                                                   peft_adapter):
    server = serving_server
    acme = tenant_key(server.http, "acme")
    for _ in range(2):
        register_adapter_dir(server.platform, "acme", "support", peft_adapter)
    r = server.http.post("/v1/adapters/support/promote", json={"version": 2}, headers=acme)
    assert r.status_code == 200, r.text  # loads acme.support.v2 on the engine
    assert server.http.put("/v1/adapters/support/policy", json={}, headers=acme).status_code == 200
    _, job_id = story.create_job(server, acme, "support-next")

    login(page, server, ADMIN_KEY)
    page.click("#nav a:text('Engines, jobs, monitor')")
    engine = page.locator("#engines tbody tr")
    expect(engine).to_have_count(1)
    expect(engine.locator(".engine-name")).to_have_text("engine-0")
    expect(engine.locator(".engine-state")).to_have_text("ready")
    expect(engine.locator(".loaded-adapters li")).to_have_text(["acme.support.v2"])
    expect(page.locator("#job-queue tbody tr")).to_have_count(1)
    expect(page.locator("#job-queue tbody tr")).to_contain_text(job_id)
    expect(page.locator("#job-queue tbody tr")).to_contain_text("queued")
    expect(page.locator("#monitor-decisions tbody tr").first).to_contain_text("retrain policy set")
    page.select_option("#event-type", "decision")
    expect(page.locator("#monitor-decisions")).to_contain_text("No monitor events yet.")


def test_every_page_draws_production_shaped_data(page, serving_server, peft_adapter, tmp_path):
    server = serving_server
    acme = tenant_key(server.http, "acme")
    seeded = story.seed(server, acme, peft_adapter)
    docs = os.environ.get("TUNELOOP_CONSOLE_SCREENSHOTS")
    out = Path(docs or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1280, "height": 900})

    def shot(name: str) -> None:
        page.wait_for_timeout(100)  # let the last paint land
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if docs:  # committed pictures: a 128-colour palette makes them a third of the size
            from PIL import Image  # Pillow comes with vllm

            with Image.open(path) as image:
                image.convert("RGB").quantize(colors=128).save(path, optimize=True)

    drift = server.http.get("/v1/adapters/intent/drift?limit=200", headers=acme).json()
    drifted = sum(1 for r in drift["history"] if r["input_drift"]["drifted"])
    assert 0 < drifted < story.WINDOWS

    login(page, server, acme)
    expect(page.locator("#view tbody tr")).to_have_count(2)
    shot("adapters")

    page.click("a.adapter-link:text('intent')")
    expect(page.locator("#champion")).to_have_text("intent@v2")
    v2 = page.locator("#view tbody tr").nth(1)
    expect(v2.locator(".gate")).to_contain_text("passed beats_champion")
    expect(v2.locator(".lineage-job")).to_have_text(seeded["job_id"])
    expect(v2).to_contain_text("warm start from intent@v1")
    for chart in ("input_drift-p", "input_drift-stat", "prediction_drift-p", "accuracy",
                  "negative-rate"):
        expect(page.locator(f"#chart-{chart}")).to_have_attribute(
            "data-points", str(story.WINDOWS))
    expect(page.locator("#chart-input_drift-p .reference")).to_have_count(1)
    expect(page.locator("#chart-input_drift-p .dot.bad")).to_have_count(drifted)
    expect(page.locator("#feedback-counts")).to_contain_text("labeled")
    expect(page.locator("#monitor-events tbody tr")).to_have_count(3)
    expect(page.locator("#retrains")).to_contain_text("no_improvement")
    expect(page.locator("#policy-schedule_hours")).to_have_value("24")
    shot("adapter")

    page.click("a.version:text('v2')")
    expect(page.locator("#confusion td.diag")).to_have_count(3)
    cells = page.locator("#confusion td").all_inner_texts()
    assert sum(int(c) for c in cells) == 90
    expect(page.locator("#per-label tbody tr")).to_have_count(3)
    expect(page.locator("#champion-confusion")).to_be_visible()
    expect(page.locator("#gate")).to_contain_text("champion intent@v1")
    shot("version")

    page.goto(f"{server.url}/ui#/adapters/helpdesk/versions/1")
    expect(page.locator("#view tbody tr").first).to_have_text("eval loss1.21001.8700")
    expect(page.locator("#gate")).to_contain_text("passed beats_base")
    samples = page.locator("#samples tbody tr")  # prompt, reference, the version's reply
    expect(samples).to_have_count(len(story.HELPDESK_SAMPLES))
    expect(samples.first).to_contain_text("How do I reset my password?")
    expect(samples.first).to_contain_text("Go to Settings > Security, then Reset password.")

    page.click("#nav a:text('Jobs')")
    page.set_input_files("#job-file", files=[jsonl_file("intent.jsonl", classification_lines(30))])
    expect(page.locator("#file-preview tbody tr")).to_have_count(5)
    shot("jobs")

    page.goto(f"{server.url}/ui#/jobs/{seeded['job_id']}")
    expect(page.locator("svg.chart")).to_have_attribute("data-points", "6")
    shot("job")

    chunks = [{"id": "c1", "model": "intent@v2", "choices": [{"index": 0, "delta": {
        "content": text}}]} for text in ("Your refund ", "is on its way.")]
    page.route("**/v1/chat/completions", lambda route: route.fulfill(
        status=200, headers={"content-type": "text/event-stream"},
        body="".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"))
    page.click("#nav a:text('Playground')")
    page.select_option("#chat-model", "intent")
    page.fill("#chat-input", "Where is my refund?")
    page.click("#chat-send")
    expect(page.locator(".msg.assistant")).to_have_text("Your refund is on its way.")
    shot("playground")

    page.click("#logout")
    login(page, server, ADMIN_KEY)
    expect(page.locator(".tenant-name")).to_have_text(["acme"])
    shot("operator")
    page.click("#nav a:text('Engines, jobs, monitor')")
    expect(page.locator(".loaded-adapters li")).to_have_text(["acme.intent.v2"])
    expect(page.locator("#job-queue tbody tr")).to_contain_text(seeded["job_id"])
    shot("platform")
