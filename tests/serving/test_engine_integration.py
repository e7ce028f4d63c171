"""The engine layer against the real vLLM engine (one per session) and a PEFT-trained LoRA.

The crash/restart test kills and restarts an engine of its own, so the session engine stays up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from services.errors import InvalidInput, Unavailable
from services.prompts import DEFAULT_CLASSIFICATION_TEMPLATE
from serving.classify import Classifier
from serving.engine_client import EngineAdapterMissing, EngineClient
from serving.engine_process import EngineProcess, EngineState
from serving.placement import AdapterLoadError, AdapterPlacement, EnginePool, EngineSlot
from tests.support import lora_training
from tests.support.engine_key import ENGINE_AUTH, ENGINE_KEY

pytestmark = [pytest.mark.integration, pytest.mark.engine]

LOAD = ("POST", "/v1/load_lora_adapter")


def chat_body(model: str, prompt: str, max_tokens: int = lora_training.PARITY_MAX_TOKENS) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0.0}


async def engine_adapters(client: EngineClient) -> set[str]:
    return {m["id"] for m in await client.list_models() if m.get("parent")}


async def generated_tokens(client: EngineClient) -> float:
    """vLLM's running total of generated tokens (all requests)."""
    async with httpx.AsyncClient(headers=ENGINE_AUTH) as http:
        text = (await http.get(f"{client.base_url}/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


async def generation_stops(client: EngineClient, timeout_s: float = 15.0) -> bool:
    """True once the engine generates nothing for 2 s (no other request runs meanwhile).

    vLLM only counts aborts in its log with --enable-log-requests, so an abandoned 900-token
    request is detected by the token counter standing still long before it could finish.
    """
    deadline = time.monotonic() + timeout_s
    last = await generated_tokens(client)
    while time.monotonic() < deadline:
        await asyncio.sleep(2.0)
        now = await generated_tokens(client)
        if now == last:
            return True
        last = now
    return False


def test_engine_is_ready_and_serves_the_base_model(loop_thread, engine, engine_settings, counting):
    assert engine.state is EngineState.READY
    assert engine.log_path.is_file() and engine.log_path.is_relative_to(engine_settings.data_dir)

    async def run():
        models = await counting.client.list_models()
        reply = await counting.client.chat_completions(
            chat_body(engine_settings.resolved_base_model_name, "What is the capital of France?", 12))
        return models, reply

    models, reply = loop_thread.run(run())
    # The base model is served (other tests of the session may have loaded adapters already).
    assert models[0]["id"] == engine_settings.resolved_base_model_name
    assert "Paris" in reply["choices"][0]["message"]["content"]


def test_adapter_loads_lazily_and_matches_peft(loop_thread, counting, trained_adapter, peft_reference):
    placement = AdapterPlacement(counting.client, capacity=4, engine_name="e0")
    name = "t1.parity.v1"

    async def run():
        before = await engine_adapters(counting.client)
        replies = {}
        for prompt in lora_training.PARITY_PROMPTS:
            async with placement.use(name, str(trained_adapter)):
                response = await counting.client.chat_completions(chat_body(name, prompt))
            replies[prompt] = response["choices"][0]["message"]["content"]
        return before, replies, await engine_adapters(counting.client)

    before, replies, after = loop_thread.run(run())
    assert name not in before and name in after
    assert counting.calls[LOAD] == 1
    assert replies == peft_reference
    assert replies["Say something."] == lora_training.FIXED_REPLY


def test_concurrent_first_requests_trigger_one_load(loop_thread, counting, trained_adapter):
    slot = EngineSlot("e0", counting.client, AdapterPlacement(counting.client, capacity=4))
    pool = EnginePool([slot])
    name = "t1.burst.v1"

    async def one(i: int) -> str:
        response = await pool.call(
            name, str(trained_adapter),
            lambda client: client.chat_completions(chat_body(name, "Say something.", 10)))
        return response["choices"][0]["message"]["content"]

    async def run():
        return await asyncio.gather(*(one(i) for i in range(8)))

    replies = loop_thread.run(run())
    assert counting.calls[LOAD] == 1
    assert set(replies) == {lora_training.FIXED_REPLY}


def test_least_recently_used_adapter_is_unloaded_at_capacity(loop_thread, counting, trained_adapter):
    placement = AdapterPlacement(counting.client, capacity=2, engine_name="e0")
    names = ["t2.lru.v1", "t2.lru.v2", "t2.lru.v3"]

    async def run():
        for name in names:
            async with placement.use(name, str(trained_adapter)):
                await counting.client.chat_completions(chat_body(name, "Say something.", 2))
        on_engine = await engine_adapters(counting.client)
        async with placement.use(names[0], str(trained_adapter)):  # evicted: loads again
            await counting.client.chat_completions(chat_body(names[0], "Say something.", 2))
        return on_engine, await engine_adapters(counting.client)

    after_three, after_reuse = loop_thread.run(run())
    assert names[0] not in after_three and {names[1], names[2]} <= after_three
    assert placement.loaded == [names[2], names[0]]
    assert names[1] not in after_reuse
    assert counting.calls[LOAD] == 4


def test_failed_load_is_clear_and_not_remembered(loop_thread, counting, tmp_path):
    placement = AdapterPlacement(counting.client, capacity=2, engine_name="e0")
    bad = tmp_path / "no-adapter-here"

    async def attempt():
        with pytest.raises(AdapterLoadError) as info:
            await placement.ensure_loaded("t3.bad.v1", str(bad))
        return info.value

    first = loop_thread.run(attempt())
    assert "t3.bad.v1" in first.message and str(bad) in first.message  # the operator's log
    assert first.status == 422 and first.code == "adapter_load_failed"  # asking again won't help
    assert str(tmp_path) not in first.reason  # what a tenant is told names no engine path
    assert not placement.is_loaded("t3.bad.v1")
    assert "t3.bad.v1" not in loop_thread.run(engine_adapters(counting.client))
    loop_thread.run(attempt())
    assert counting.calls[LOAD] == 2  # the failure was not cached


def test_engine_errors_are_mapped(loop_thread, counting, engine_settings):
    base = engine_settings.resolved_base_model_name

    async def run():
        with pytest.raises(EngineAdapterMissing):
            await counting.client.chat_completions(chat_body("t9.unknown.v1", "hi"))
        with pytest.raises(InvalidInput, match="rejected"):
            await counting.client.completions(
                {"model": base, "prompt": "word " * 2000, "max_tokens": 4})
        with pytest.raises(EngineAdapterMissing):
            await counting.client.unload_lora_adapter("t9.unknown.v1")
        with pytest.raises(EngineAdapterMissing):
            await counting.client.open_chat_stream(chat_body("t9.unknown.v1", "hi"))

    loop_thread.run(run())


def test_streaming_yields_sse_lines_and_closing_aborts_the_engine_request(
    loop_thread, counting, engine_settings
):
    base = engine_settings.resolved_base_model_name

    async def run():
        lines = [line async for line in counting.client.stream_chat_completions(
            chat_body(base, "Count from one to five.", 8))]
        body = chat_body(base, "Write a very long story about the sea.", 900)
        body["ignore_eos"] = True
        stream = await counting.client.open_chat_stream(body)
        got = []
        async for line in stream:
            got.append(line)
            if len(got) == 3:
                break  # the consumer goes away mid-generation
        await stream.aclose()
        return lines, await generation_stops(counting.client)

    lines, was_aborted = loop_thread.run(run())
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    assert was_aborted, "closing the stream did not abort the request in vLLM"


def test_cancelled_caller_aborts_a_non_streaming_request(loop_thread, counting, engine_settings):
    base = engine_settings.resolved_base_model_name

    async def run():
        body = chat_body(base, "Write a very long story about mountains.", 900)
        body["ignore_eos"] = True
        task = asyncio.create_task(counting.client.chat_completions(body))
        await asyncio.sleep(1.0)  # the engine is generating
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await generation_stops(counting.client)

    assert loop_thread.run(run()), "cancelling the caller did not abort the request in vLLM"


def test_classification_sums_to_one_with_one_engine_request(loop_thread, counting, trained_adapter):
    placement = AdapterPlacement(counting.client, capacity=4)
    classifier = Classifier(counting.client)
    name = "t4.topics.v1"
    labels = lora_training.CLASSIFY_LABELS
    texts = {
        "Heavy snow and icy roads are expected overnight.": "weather",
        "The striker scored a late goal to win the match.": "sports",
        "Chop the garlic and fry it gently in olive oil.": "cooking",
    }

    async def run():
        async with placement.use(name, str(trained_adapter)):
            plan = await classifier.plan(name, DEFAULT_CLASSIFICATION_TEMPLATE, labels)
            counting.calls.clear()
            results = await classifier.classify_many(
                name, DEFAULT_CLASSIFICATION_TEMPLATE, list(texts), labels)
        return plan, results

    plan, results = loop_thread.run(run())
    assert plan.deeper == ()  # distinct first tokens
    assert sum(counting.calls.values()) == len(texts)  # one engine request per text
    for result, expected in zip(results, texts.values()):
        assert set(result.probabilities) == set(labels)
        assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
        assert result.engine_requests == 1
        assert result.label == expected, result


def test_classification_with_shared_first_tokens_costs_one_more_request(
    loop_thread, counting, engine_settings
):
    classifier = Classifier(counting.client)
    base = engine_settings.resolved_base_model_name
    labels = ["billing issue", "billing question", "weather", "other"]

    async def run():
        plan = await classifier.plan(base, DEFAULT_CLASSIFICATION_TEMPLATE, labels)
        counting.calls.clear()
        result = await classifier.classify(
            base, DEFAULT_CLASSIFICATION_TEMPLATE, "I was charged twice on my invoice.", labels)
        return plan, result

    plan, result = loop_thread.run(run())
    assert len(plan.deeper) == 1
    assert sum(counting.calls.values()) == 2
    assert result.engine_requests == 2
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(p > 0 for p in result.probabilities.values())


def test_killed_engine_is_unavailable_then_restarts_with_adapters_reloaded(
    loop_thread, doomed_engine: EngineProcess, engine_settings, trained_adapter
):
    engine = doomed_engine

    async def make() -> EngineClient:
        return EngineClient(engine.url, timeout_s=engine_settings.request_timeout_s, retry_after_s=2.0,
                            api_key=ENGINE_KEY)

    client = loop_thread.run(make())
    placement = AdapterPlacement(client, capacity=4, engine_name="e0")
    engine.add_restart_callback(placement.reload_all)
    name = "t5.survivor.v1"

    async def before_crash():
        async with placement.use(name, str(trained_adapter)):
            await client.chat_completions(chat_body(name, "Say something.", 4))

    loop_thread.run(before_crash())
    old_pid, restarts = engine.pid, engine.restart_count
    os.killpg(old_pid, signal.SIGKILL)

    async def while_down():
        with pytest.raises(Unavailable) as info:
            await client.chat_completions(chat_body(name, "Say something.", 4))
        return info.value

    error = loop_thread.run(while_down())
    assert error.status == 503 and error.retry_after_s > 0

    # Wait for the supervisor to notice (state leaves READY): the process's exit code can be
    # known a moment before, and wait_ready() would still return at once.
    deadline = time.monotonic() + 60
    while engine.state is EngineState.READY:
        assert time.monotonic() < deadline, "the supervisor did not notice the killed engine"
        time.sleep(0.1)

    async def recovered():
        await engine.wait_ready(timeout_s=600)
        models = await engine_adapters(client)
        async with placement.use(name, str(trained_adapter)):
            response = await client.chat_completions(chat_body(name, "Say something."))
        return models, response["choices"][0]["message"]["content"]

    try:
        models, reply = loop_thread.run(recovered(), timeout_s=700)
    except Exception as exc:
        raise AssertionError(f"the engine did not come back ({engine.state.value}); its log:\n"
                             f"{engine._log_tail(60)}") from exc
    finally:
        loop_thread.run(client.aclose())
    assert engine.restart_count == restarts + 1 and engine.pid != old_pid
    assert name in models  # re-loaded by the restart callback, not by this request
    assert reply == lora_training.FIXED_REPLY
