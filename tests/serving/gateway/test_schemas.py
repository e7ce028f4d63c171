"""Only known OpenAI parameters reach an engine, and only text content parts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.gateway.schemas import ChatRequest, CompletionRequest

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("extra", [
    {"chat_template": "{{ 7 * 7 }}"},          # a per-request Jinja template on the engine
    {"guided_regex": "(a+)+$"},                 # a regex compiled by the engine
    {"mm_processor_kwargs": {}},
    {"lora_request": {"lora_path": "/etc"}},
])
def test_engine_only_parameters_are_refused_with_the_supported_list(extra):
    with pytest.raises(ValidationError, match="unsupported chat parameter.*supported: .*temperature"):
        ChatRequest.model_validate({**CHAT, **extra})


def test_openai_parameters_pass():
    body = {**CHAT, "temperature": 0.2, "top_p": 0.9, "stop": ["\n"], "seed": 1, "logprobs": True,
            "top_logprobs": 2, "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": "auto", "stream_options": {"include_usage": True}, "user": "u"}
    assert ChatRequest.model_validate(body).model == "m"
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": True, "top_k": 5,
                                             "ignore_eos": True, "stop_token_ids": [2]})
    with pytest.raises(ValidationError, match="unsupported completions parameter"):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "guided_json": {}})


def test_echo_with_logprobs_is_refused_naming_the_fix():
    with pytest.raises(ValidationError, match="send echo without logprobs, or logprobs without"):
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": True, "logprobs": 0})
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "logprobs": 2})
    assert CompletionRequest.model_validate({"model": "m", "prompt": "x", "echo": False,
                                             "logprobs": 2})


@pytest.mark.parametrize("content", [
    [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}],
    [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
    [{"type": "text", "text": "hi", "image_url": "http://x"}],
    ["not a part"],
])
def test_non_text_content_parts_are_refused(content):
    with pytest.raises(ValidationError, match="only text content parts"):
        ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": content}]})


def test_text_parts_names_and_tool_messages_pass():
    messages = [
        {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert len(ChatRequest.model_validate({"model": "m", "messages": messages}).messages) == 3
    with pytest.raises(ValidationError, match="unsupported message parameter"):
        ChatRequest.model_validate({"model": "m", "messages": [
            {"role": "user", "content": "x", "audio": {"id": "a"}}]})
