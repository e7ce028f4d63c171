"""The gateway end to end: the official openai client, a real vLLM engine, real adapters.

The gateway runs under uvicorn in a thread, on the session's one engine (as a remote engine
URL); tenant A owns a trained chat/classification adapter, tenant B owns nothing.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from services.platform import Platform
from services.settings import Settings
from tests.support import lora_training
from tests.support.engine import serving_on
from tests.support.engine_key import ENGINE_AUTH

pytestmark = [pytest.mark.integration, pytest.mark.engine]
ADMIN = "admin-gw-key"


class _Server:
    def __init__(self, app, port: int):  # noqa: ANN001
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self):  # noqa: ANN204
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.server.should_exit = True
        self.thread.join(30)


def _untrained_lora(base_model_dir: Path, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
    get_peft_model(model, LoraConfig(r=8, target_modules="all-linear")).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def gateway(engine, engine_settings, base_model_dir, trained_adapter, tmp_path_factory):
    from services.adapter_intake import register_adapter_dir
    from services.tenants import create_key, create_tenant
    from serving.engine_process import free_port
    from tuneloop.app import create_app
    from tuneloop.state import ServeOptions

    data = tmp_path_factory.mktemp("gateway-data")
    settings = Settings(
        data_dir=data, base_model=str(base_model_dir), admin_key=ADMIN,
        port=free_port(), tenant_rate_per_s=1000, tenant_max_concurrency=64,
        **serving_on(engine, engine_settings),
    )
    platform = Platform.open(settings)
    keys = {}
    with platform.store.write() as s:
        for name in ("acme", "globex"):
            create_tenant(s, name)
            keys[name] = create_key(s, name).key
    register_adapter_dir(platform, "acme", "support", trained_adapter)
    register_adapter_dir(platform, "acme", "support",
                         _untrained_lora(base_model_dir, tmp_path_factory.mktemp("untrained")))
    register_adapter_dir(platform, "acme", "topics", trained_adapter, task="classification",
                         labels=lora_training.CLASSIFY_LABELS)
    app = create_app(platform=platform, serve=ServeOptions())
    with _Server(app, settings.port) as server:
        server.keys = keys
        server.app = app
        server.platform = platform
        server.base = settings.resolved_base_model_name
        yield server
    platform.close()


def _client(gateway, tenant="acme"):  # noqa: ANN001, ANN202
    from openai import OpenAI

    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.keys[tenant], max_retries=0, timeout=120)


def _http(gateway, tenant="acme") -> httpx.Client:  # noqa: ANN001
    return httpx.Client(base_url=gateway.url, timeout=120,
                        headers={"Authorization": f"Bearer {gateway.keys[tenant]}"})


def test_openai_client_lists_models_chats_and_streams(gateway):
    client = _client(gateway)
    ids = {m.id for m in client.models.list().data}
    assert {gateway.base, "support", "support@v1", "support@v2", "topics"} <= ids
    chat = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Say something."}],
        max_tokens=16, temperature=0,
    )
    assert chat.model == "support@v1"
    assert chat.choices[0].message.content.startswith("Zebra umbrellas")
    assert chat.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model="support@v1", messages=[{"role": "user", "content": "Say something."}],
        max_tokens=16, temperature=0, stream=True,
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"support@v1"}
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == chat.choices[0].message.content
    base = client.chat.completions.create(
        model=gateway.base, messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=20, temperature=0,
    )
    assert "Paris" in base.choices[0].message.content


def _logged_tokens(gateway, response_id: str) -> tuple[int, int]:  # noqa: ANN001
    """(prompt, completion) tokens of a logged response; a stream is logged when it closes."""
    from sqlalchemy import select

    from services.store.models import RequestRecord

    deadline = time.monotonic() + 30
    while True:
        gateway.app.state.tuneloop.gateway.request_log.flush()
        with gateway.platform.store.read() as s:
            row = s.scalar(select(RequestRecord).where(RequestRecord.id == response_id))
        if row is not None:
            return row.prompt_tokens, row.completion_tokens
        assert time.monotonic() < deadline, f"{response_id} never reached the request log"
        time.sleep(0.2)


def test_streams_send_the_usage_chunk_only_when_asked_and_always_count_tokens(gateway):
    client = _client(gateway)
    messages = [{"role": "user", "content": "Say something."}]
    chat = dict(model="support@v1", messages=messages, max_tokens=8, temperature=0, stream=True)
    plain = list(client.chat.completions.create(**chat))
    text = "".join(c.choices[0].delta.content or "" for c in plain)  # every tutorial's loop
    assert text and all(c.usage is None for c in plain)
    asked = list(client.chat.completions.create(**chat, stream_options={"include_usage": True}))
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens > 0
    assert all(c.choices for c in asked[:-1])
    prompt_tokens, completion_tokens = _logged_tokens(gateway, plain[0].id)
    assert (prompt_tokens, completion_tokens) == (asked[-1].usage.prompt_tokens,
                                                  asked[-1].usage.completion_tokens)

    done = dict(model=gateway.base, prompt="The capital of France is", max_tokens=4, temperature=0,
                stream=True)
    plain_done = list(client.completions.create(**done))
    assert all(c.choices and c.usage is None for c in plain_done)
    asked_done = list(client.completions.create(**done, stream_options={"include_usage": True}))
    usage = asked_done[-1].usage
    assert asked_done[-1].choices == [] and usage.completion_tokens > 0
    assert _logged_tokens(gateway, plain_done[0].id) == (usage.prompt_tokens, usage.completion_tokens)


def test_models_retrieve_the_base_an_alias_and_a_version(gateway):
    import openai

    client = _client(gateway)
    listed = {m.id: m.to_dict() for m in client.models.list().data}
    base = client.models.retrieve(gateway.base).to_dict()
    assert base["id"] == gateway.base and base["object"] == "model"
    alias = client.models.retrieve("support").to_dict()
    assert (alias["id"], alias["owned_by"], alias["parent"]) == ("support", "acme", gateway.base)
    assert alias["root"] == listed["support"]["root"]
    assert client.models.retrieve("support@v2").to_dict() == listed["support@v2"]
    assert client.models.retrieve("topics@v1").id == "topics@v1"
    for tenant, model in [("acme", "nope"), ("acme", "support@v9"), ("acme", "no@such@ref"),
                          ("globex", "support"), ("globex", "support@v1")]:
        with pytest.raises(openai.NotFoundError) as raised:
            _client(gateway, tenant).models.retrieve(model)
        assert (raised.value.code, raised.value.type) == ("model_not_found", "invalid_request_error")
    with _http(gateway, "globex") as http:
        r = http.get("/v1/models/support@v1")
        assert r.status_code == 404 and set(r.json()["error"]) >= {"message", "type", "code"}


def test_openai_parameters_pass_through(gateway):
    client = _client(gateway)
    r = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "Tell me a joke."}],
        max_tokens=8, temperature=0.9, top_p=0.9, n=2, seed=7, logprobs=True, top_logprobs=2,
        stop=["midnight"],
    )
    assert len(r.choices) == 2
    assert r.choices[0].logprobs.content[0].top_logprobs
    assert all("midnight" not in (c.message.content or "") for c in r.choices)
    done = client.completions.create(model=gateway.base, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert done.choices[0].text


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather of a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}


def test_json_schema_and_tool_calls_through_the_engine(gateway):
    """json_schema output on the base model and an adapter; a named tool call whose arguments
    match its (strict) schema, and logged as a tool call; ``tool_choice="auto"`` (the engine runs
    the hermes tool parser) answers with text or a call of a defined tool."""
    from sqlalchemy import select

    from services.store.models import RequestRecord

    client = _client(gateway)
    yes_no = {"type": "json_schema", "json_schema": {"name": "yes_no", "schema": {
        "type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"], "additionalProperties": False}}}
    for model in (gateway.base, "support"):
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Is the sky blue? Answer in JSON."}],
            response_format=yes_no, max_tokens=24, temperature=0)
        assert json.loads(r.choices[0].message.content)["answer"] in ("yes", "no"), model

    weather = [{"role": "user", "content": "What is the weather in Paris?"}]
    named = client.chat.completions.create(
        model=gateway.base, messages=weather, tools=[WEATHER_TOOL], max_tokens=96, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    gateway.app.state.tuneloop.gateway.request_log.flush()
    with gateway.platform.store.read() as s:
        logged = s.scalar(select(RequestRecord.output).where(RequestRecord.id == named.id))
    assert logged["tool_calls"][0]["function"] == {"name": "get_weather",
                                                   "arguments": call.function.arguments}

    auto = client.chat.completions.with_raw_response.create(
        model=gateway.base, messages=weather, tools=[WEATHER_TOOL], tool_choice="auto",
        max_tokens=48, temperature=0)
    assert auto.status_code == 200
    message = auto.parse().choices[0].message
    if message.tool_calls:  # the 135M model may call the tool or answer in text
        assert all(c.function.name == "get_weather" for c in message.tool_calls)
        assert all(isinstance(json.loads(c.function.arguments), dict) for c in message.tool_calls)
    else:
        assert message.content


def test_gateway_output_matches_peft(gateway, peft_reference):
    client = _client(gateway)
    for prompt, expected in peft_reference.items():
        r = client.chat.completions.create(
            model="support@v1", messages=[{"role": "user", "content": prompt}],
            max_tokens=lora_training.PARITY_MAX_TOKENS, temperature=0,
        )
        assert r.choices[0].message.content == expected, prompt


def test_classify_returns_probabilities_over_the_label_set(gateway):
    with _http(gateway) as http:
        texts = [t for t, _ in lora_training.CLASSIFY_EXAMPLES]
        r = http.post("/v1/classify", json={"model": "topics", "input": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "classification" and body["model"] == "topics@v1"
        for item, (_, label) in zip(body["data"], lora_training.CLASSIFY_EXAMPLES):
            assert set(item["probabilities"]) == set(lora_training.CLASSIFY_LABELS)
            assert abs(sum(item["probabilities"].values()) - 1) < 1e-6
            assert item["label"] == label
        single = http.post("/v1/classify", json={"model": "topics", "input": texts[0]}).json()
        assert len(single["data"]) == 1
        r = http.post("/v1/classify", json={"model": "support", "input": "x"})
        assert r.status_code == 400 and "classification" in r.json()["error"]["message"]


def test_errors(gateway):
    with _http(gateway, "globex") as b, _http(gateway) as a:
        for path, body in [
            ("/v1/chat/completions", {"model": "support", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/chat/completions", {"model": "support@v1", "messages": [{"role": "user", "content": "hi"}]}),
            ("/v1/completions", {"model": "support", "prompt": "hi"}),
            ("/v1/classify", {"model": "topics", "input": "hi"}),
        ]:
            r = b.post(path, json=body)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "model_not_found"
        assert b.get("/v1/adapters/support").status_code == 404
        assert "support" not in {m["id"] for m in b.get("/v1/models").json()["data"]}
        r = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": "Bearer nope"},
                       json={"model": gateway.base, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 401
        r = a.post("/v1/chat/completions", content=b'{"model": "x", "messages": [', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        r = a.post("/v1/chat/completions", json={"model": "support", "messages": []})
        assert r.status_code == 400
        r = a.post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "wizard", "content": "x"}]})
        assert r.status_code == 400 and "role" in r.json()["error"]["message"]
        r = a.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 404
        long_prompt = "hello " * 1500  # ~1500 tokens, over the 1024-token context
        r = a.post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": long_prompt}]})
        assert r.status_code == 400, r.text
        assert "1024" in r.json()["error"]["message"]
        r = a.post("/v1/chat/completions", json={"model": "support", "messages": [{"role": "user", "content": "x" * 100_000}]})
        assert r.status_code == 400 and "TUNELOOP_MAX_MODEL_LEN" in r.json()["error"]["message"]


def test_a_version_the_engine_refuses_fails_with_a_4xx_and_stays_failed(gateway, engine_settings,
                                                                        base_model_dir, tmp_path):
    from services import registry
    from services.adapter_intake import register_adapter_dir
    from services.tenants import get_tenant

    platform = gateway.platform
    row = register_adapter_dir(platform, "acme", "broken",
                               _untrained_lora(base_model_dir, tmp_path / "lora"))
    with platform.artifacts.fs.open(platform.artifacts._path(row.artifact_key), "wb") as fh:
        fh.write(b"bit rot")  # the blob the engine will fetch no longer matches its key
    chat = {"model": "broken", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    with _http(gateway) as a:
        r = a.post("/v1/chat/completions", json=chat)
        assert r.status_code == 422, r.text  # not a 503 that every SDK would retry forever
        error = r.json()["error"]
        assert error["code"] == "adapter_load_failed" and "broken@v1" in error["message"]
        assert "does not match its hash" in error["message"] and "rollback" in error["message"]
        assert str(engine_settings.data_dir) not in error["message"]
        with platform.store.read() as session:
            version = registry.get_version(session, get_tenant(session, "acme"), "broken", 1)
            assert version.state == "failed" and "does not match its hash" in version.failure
        listed = a.get("/v1/adapters/broken").json()
        assert [v["failure"] is not None for v in listed["versions"]] == [True]
        r = a.post("/v1/chat/completions", json=chat)  # from now on, without asking the engine
        assert r.status_code == 404 and "failed, not servable" in r.json()["error"]["message"]
        assert "does not match its hash" in r.json()["error"]["message"]
        r = a.post("/v1/chat/completions", json={**chat, "model": "support"})
        assert r.status_code == 200, r.text  # the tenant's other adapters are untouched


def test_prompt_log_probabilities_are_refused_so_no_tenant_can_kill_the_engine(gateway):
    """vLLM's CPU LoRA kernels crash the engine (every tenant's requests) when a request for
    prompt log-probabilities shares a batch with another request: echo with logprobs is a 400,
    and the engine keeps serving the requests sent alongside."""
    body = {"model": "support", "prompt": ["Say something.", "Tell me a joke."], "echo": True,
            "logprobs": 1, "max_tokens": 4}
    with _http(gateway) as a, concurrent.futures.ThreadPoolExecutor(4) as pool:
        others = [pool.submit(a.post, "/v1/completions", json={
            "model": "support", "prompt": "Say something.", "max_tokens": 16}) for _ in range(3)]
        r = a.post("/v1/completions", json=body)
        assert r.status_code == 400, r.text
        assert "send echo without logprobs, or logprobs without echo" in r.json()["error"]["message"]
        assert all(f.result().status_code == 200 for f in others)
        echoed = a.post("/v1/completions", json={**body, "logprobs": None})
        assert echoed.status_code == 200, echoed.text
        assert echoed.json()["choices"][0]["text"].startswith("Say something.")


def test_hot_swap_under_load_fails_no_request(gateway):
    """Promote v1 <-> v2 repeatedly while clients send requests; every response names the
    version that produced it (v1 replies with the trained phrase, v2 does not)."""
    stop = threading.Event()
    results: list[tuple[int, str, str]] = []
    failures: list[str] = []

    def client_loop() -> None:
        with _http(gateway) as http:
            while not stop.is_set():
                r = http.post("/v1/chat/completions", json={
                    "model": "support", "max_tokens": 6, "temperature": 0,
                    "messages": [{"role": "user", "content": "Say something."}]})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                    continue
                body = r.json()
                results.append((r.status_code, body["model"], body["choices"][0]["message"]["content"]))

    with concurrent.futures.ThreadPoolExecutor(4) as pool, _http(gateway) as admin:
        futures = [pool.submit(client_loop) for _ in range(4)]
        for i in range(6):
            version = 2 if i % 2 == 0 else 1
            r = admin.post("/v1/adapters/support/promote", json={"version": version})
            assert r.status_code == 200, r.text
            time.sleep(1.0)
        stop.set()
        for f in futures:
            f.result()
    assert not failures, failures[:3]
    assert len(results) > 10
    models = {m for _, m, _ in results}
    assert models == {"support@v1", "support@v2"}
    for _, model, text in results:
        assert text.startswith("Zebra") == (model == "support@v1"), (model, text)


def _generated_tokens(engine_url: str) -> float:
    text = httpx.get(f"{engine_url}/metrics", headers=ENGINE_AUTH).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


def _generation_stops(engine_url: str, timeout_s: float = 20.0) -> bool:
    """True once the engine generates nothing for 2 s (an abandoned 900-token request would
    keep it busy for much longer)."""
    deadline = time.monotonic() + timeout_s
    last = _generated_tokens(engine_url)
    while time.monotonic() < deadline:
        time.sleep(2.0)
        now = _generated_tokens(engine_url)
        if now == last:
            return True
        last = now
    return False


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "non-streaming"])
def test_client_disconnect_aborts_the_engine_request_and_frees_the_slot(gateway, engine, stream):
    import json
    import socket

    body = json.dumps({"model": "support@v1", "max_tokens": 900, "ignore_eos": True, "stream": stream,
                       "temperature": 0, "messages": [{"role": "user", "content": "Tell a long story."}]})
    port = int(gateway.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            + f"authorization: Bearer {gateway.keys['acme']}\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            + body.encode())
        if stream:
            sock.settimeout(60)
            received = b""
            while received.count(b"data: ") < 3:  # a few tokens arrived: generation is running
                chunk = sock.recv(65536)
                assert chunk, "stream ended early"
                received += chunk
        else:
            start = _generated_tokens(engine.url)
            deadline = time.monotonic() + 60
            while _generated_tokens(engine.url) < start + 3:
                assert time.monotonic() < deadline, "the engine never started generating"
                time.sleep(0.2)
    assert _generation_stops(engine.url), "the client left but the engine kept generating"
    assert gateway.app.state.tuneloop.gateway.limiter.in_flight("acme") == 0


def test_responses_are_persisted_for_feedback(gateway):
    from sqlalchemy import select

    from services.store.models import RequestRecord

    client = _client(gateway)
    r = client.chat.completions.create(model="support@v2", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    with _http(gateway) as http:  # feedback right away: the gateway flushes the log first
        fb = http.post("/v1/feedback", json={"response_id": r.id, "rating": 1, "id": "fb-gw"})
        assert fb.status_code == 201, fb.text
    with gateway.platform.store.read() as s:
        row = s.scalar(select(RequestRecord).where(RequestRecord.id == r.id))
    assert row is not None, "response id not in the request log"
    assert (row.adapter, row.adapter_version, row.route) == ("support", 2, "chat")
    assert row.completion_tokens == r.usage.completion_tokens


def test_metrics_pass_promtool(gateway, tmp_path):
    assert httpx.get(f"{gateway.url}/metrics").status_code == 401  # the engine key guards it
    text = httpx.get(f"{gateway.url}/metrics", headers=ENGINE_AUTH).text
    assert 'tuneloop_requests_total{adapter="support"' in text
    assert "tuneloop_adapter_loads_total" in text
    path = tmp_path / "metrics.txt"
    path.write_text(text)
    result = subprocess.run(["promtool", "check", "metrics"], stdin=path.open(), capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_engine_killed_gives_503_then_recovers_with_adapters(gateway, engine):
    with _http(gateway) as http:
        ok = http.post("/v1/chat/completions", json={"model": "support@v1", "max_tokens": 4, "temperature": 0,
                                                     "messages": [{"role": "user", "content": "Say something."}]})
        assert ok.status_code == 200
        os.killpg(engine.pid, signal.SIGKILL)
        saw_503 = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            r = http.post("/v1/chat/completions", json={"model": "support@v1", "max_tokens": 4, "temperature": 0,
                                                        "messages": [{"role": "user", "content": "Say something."}]})
            if r.status_code == 503:
                saw_503 = True
                assert int(r.headers["Retry-After"]) >= 1
                assert "Traceback" not in r.text
            elif r.status_code == 200 and saw_503:
                assert r.json()["choices"][0]["message"]["content"].startswith("Zebra")
                break
            else:
                assert r.status_code in (200, 503), r.text
            time.sleep(1)
        assert saw_503, "no 503 while the engine was down"
        assert r.status_code == 200, "the gateway did not recover after the engine restarted"
        assert http.get("/readyz").status_code == 200
