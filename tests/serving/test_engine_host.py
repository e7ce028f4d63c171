"""The engine host against the real vLLM engine: the engine key on every route, and adapters
named by content key (``artifact:<sha256>``) that the engine fetches from the artifact store
itself (serving/engine_middleware.py)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from services.artifacts import ArtifactStore, artifact_ref
from serving.placement import AdapterLoadError, AdapterPlacement
from tests.support import lora_training
from tests.support.engine_key import ENGINE_AUTH

pytestmark = [pytest.mark.integration, pytest.mark.engine]


def chat_body(model: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": "Say something."}],
            "max_tokens": lora_training.PARITY_MAX_TOKENS, "temperature": 0}


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/load_lora_adapter"),
    ("POST", "/tokenize"), ("GET", "/metrics"),
])
def test_every_route_but_health_needs_the_engine_key(engine, method, path):
    with httpx.Client(base_url=engine.url, timeout=30) as http:
        assert http.get("/health").status_code == 200
        body = {"model": "x", "prompt": "hi"} if method == "POST" else None
        missing = http.request(method, path, json=body)
        wrong = http.request(method, path, json=body, headers={"Authorization": "Bearer wrong"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert "TUNELOOP_ENGINE_API_KEY" in missing.json()["error"]["message"]


def test_engine_fetches_an_adapter_by_content_key_and_serves_it(
    loop_thread, engine, engine_settings, counting, trained_adapter
):
    store = ArtifactStore(engine_settings.resolved_artifacts_url)
    key = store.put_dir(trained_adapter)
    placement = AdapterPlacement(counting.client, capacity=4, engine_name="e0")
    name = f"host.fetched.{key[:12]}"

    async def run():
        async with placement.use(name, artifact_ref(key)):
            response = await counting.client.chat_completions(chat_body(name))
        return response["choices"][0]["message"]["content"]

    assert loop_thread.run(run()) == lora_training.FIXED_REPLY
    cached = engine_settings.data_dir / "engine-adapters" / key
    assert (cached / "adapter_config.json").is_file()  # unpacked on the engine host


def test_missing_and_corrupt_artifacts_are_refused_with_the_reason(
    loop_thread, engine_settings, counting
):
    store = ArtifactStore(engine_settings.resolved_artifacts_url)
    missing = hashlib.sha256(b"never stored").hexdigest()
    corrupt = hashlib.sha256(b"what the blob should be").hexdigest()
    blob = store._path(corrupt)
    store.fs.makedirs(blob.rsplit("/", 1)[0], exist_ok=True)
    with store.fs.open(blob, "wb") as fh:
        fh.write(b"something else")
    placement = AdapterPlacement(counting.client, capacity=4, engine_name="e0")

    async def load(key: str) -> str:
        with pytest.raises(AdapterLoadError) as info:
            async with placement.use(f"host.bad.{key[:12]}", artifact_ref(key)):
                pass
        return info.value.message

    assert "missing from the artifact store" in loop_thread.run(load(missing))
    assert "does not match its hash" in loop_thread.run(load(corrupt))
    assert not placement.loaded


def test_engine_metrics_are_readable_with_the_key(engine):
    response = httpx.get(f"{engine.url}/metrics", headers=ENGINE_AUTH, timeout=30)
    assert response.status_code == 200 and "vllm:" in response.text
    # Residency: what this engine fetched from the store (the fetch test above ran first).
    assert 'tuneloop_engine_adapter_fetches_total{source="store"}' in response.text
    assert "tuneloop_engine_adapter_fetch_seconds_count" in response.text
