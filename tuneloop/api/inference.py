"""OpenAI-compatible routes: models, chat, completions, classify, readiness, metrics.

Each route: authenticate -> admit (tenant limits) -> resolve the model -> dispatch to an engine
-> rewrite ``id``/``model`` -> record in the request log. Streaming responses are passed through
chunk by chunk; a client that disconnects cancels the engine request.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from services import registry
from services.errors import InvalidInput, NotFound, TooLarge, Unavailable
from services.store.models import AdapterVersion, Tenant
from serving.gateway.bookkeeping import InferenceCall, inference_call
from serving.gateway.disconnect import CLIENT_CLOSED_STATUS, cancel_on_disconnect
from serving.gateway.dispatch import OpenStream
from serving.gateway.limits import check_weight
from serving.gateway.resolution import Target
from serving.gateway.runtime import Gateway
from serving.gateway.schemas import ChatRequest, ClassifyRequest, CompletionRequest
from serving.gateway.streaming import RelayResponse, StreamRecord, rewrite_events
from tuneloop.api.deps import (
    cached_tenant,
    current_tenant,
    gateway,
    platform,
    require_metrics_token,
)
from tuneloop.api.json_input import parse_json

router = APIRouter(tags=["serving"])
RequestT = TypeVar("RequestT", bound=BaseModel)

MAX_BODY_BYTES = 8 * 1024 * 1024


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _validate(schema: type[RequestT], body: dict) -> RequestT:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ()))
        raise InvalidInput(f"invalid request: {loc}: {first.get('msg')}", param=loc or None) from exc


def _check_prompt_size(text_len: int, max_model_len: int) -> None:
    # A cheap guard before tokenizing: no token is shorter than one character on average over
    # a long text, so this only refuses prompts that certainly exceed the context.
    limit_chars = max_model_len * 16
    if text_len > limit_chars:
        raise InvalidInput(
            f"prompt is {text_len} characters, far over the model's context of {max_model_len} "
            "tokens (TUNELOOP_MAX_MODEL_LEN); shorten it",
            param="messages", code="context_length_exceeded",
        )


async def _tenant(request: Request) -> Tenant:
    """The caller's tenant; a cached key costs no threadpool hop (the store read does)."""
    tenant = cached_tenant(request)
    if tenant is None:
        tenant = await run_in_threadpool(current_tenant, request)
    return tenant


def _check_background(gw: Gateway) -> None:
    """Raise Unavailable with the reason when a gateway task died (e.g. the engine's start):
    waiting would not help, so "starting" would be a lie."""
    failure = gw.tasks.failure()
    if failure is not None:
        raise Unavailable(f"not ready: {failure}", retry_after_s=30)


async def _resolve(gw: Gateway, tenant: Tenant, model: str) -> Target:
    hit = gw.resolver.cached(tenant, model)
    if hit is not None:
        return hit
    return await run_in_threadpool(gw.resolver.resolve, tenant, model)


def _base_entry(base_model_name: str, created: int) -> dict:
    return {"id": base_model_name, "object": "model", "created": created, "owned_by": "tuneloop"}


def _alias_entry(name: str, champion_ref: str, tenant: Tenant, base_model_name: str,
                 created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": tenant.name,
            "parent": base_model_name, "root": champion_ref}


def _version_entry(ref: str, version: AdapterVersion, tenant: Tenant, base_model_name: str) -> dict:
    return {"id": ref, "object": "model", "created": int(version.created_at.timestamp()),
            "owned_by": tenant.name, "parent": base_model_name}


@router.get("/v1/models")
def list_models(request: Request, tenant: Tenant = Depends(current_tenant)) -> dict:
    p = platform(request)
    created = int(time.time())
    data = [_base_entry(p.base_model_name, created)]
    with p.store.read() as session:
        for adapter in registry.list_adapters(session, tenant):
            versions = registry.list_versions(session, adapter)
            champion = next((v for v in versions if v.id == adapter.champion_version_id), None)
            if champion is not None:
                champion_ref = registry.version_ref(adapter.name, champion.version)
                data.append(_alias_entry(adapter.name, champion_ref, tenant, p.base_model_name,
                                         created))
            for v in versions:
                if v.state == "ready":
                    data.append(_version_entry(registry.version_ref(adapter.name, v.version), v,
                                               tenant, p.base_model_name))
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}")
def retrieve_model(model_id: str, request: Request,
                   tenant: Tenant = Depends(current_tenant)) -> dict:
    """One entry of ``/v1/models``: the base, an alias (``root``: its champion) or ``name@vN``.
    Raises NotFound (``model_not_found``) for anything the list would not show this tenant."""
    p = platform(request)
    if model_id == p.base_model_name:
        return _base_entry(p.base_model_name, int(time.time()))
    with p.store.read() as session:
        try:
            resolved = registry.resolve(session, tenant, model_id)
        except InvalidInput as exc:  # not a ref at all: as unknown as any other name
            raise NotFound(f"model {model_id!r} does not exist", param="model",
                           code="model_not_found") from exc
        if registry.parse_model_ref(model_id)[1] is None:
            return _alias_entry(model_id, resolved.ref, tenant, p.base_model_name, int(time.time()))
        version = registry.get_version(session, tenant, resolved.name, resolved.version)
        return _version_entry(resolved.ref, version, tenant, p.base_model_name)


def _prompt_chars(parsed: ChatRequest | CompletionRequest) -> int:
    # Every field of a message counts (``name``, ``tool_calls``, ...): the engine's chat template
    # may render any of them, and an uncounted one let an 8 MB ``name`` through.
    if isinstance(parsed, ChatRequest):
        return sum(_chars(m.content) + sum(_chars(v) for v in (m.model_extra or {}).values())
                   for m in parsed.messages)
    return len(json.dumps(parsed.prompt))


def _chars(value: object) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value))


def _output_of(result: dict) -> Any:
    """What the request log keeps of a non-streamed reply: the text (a list for n > 1); a chat
    reply that calls tools is its message (``content``, ``tool_calls``) instead."""
    choices = result.get("choices") or []
    texts = [_message_output(c.get("message") or {}) if "message" in c else c.get("text")
             for c in choices]
    return texts[0] if len(texts) == 1 else texts


def _message_output(message: dict) -> Any:
    if message.get("tool_calls"):
        return {"role": "assistant", "content": message.get("content"),
                "tool_calls": message["tool_calls"]}
    return message.get("content")


async def _serve_generation(request: Request, route: str,
                            schema: type[ChatRequest] | type[CompletionRequest],
                            id_prefix: str) -> Response:
    gw = gateway(request)
    tenant = await _tenant(request)
    body = await _json_body(request)
    parsed = _validate(schema, body)
    _check_prompt_size(_prompt_chars(parsed), gw.settings.max_model_len)
    weight, counted = parsed.sequences()
    check_weight(weight, gw.settings.max_request_sequences, counted)
    request_input = body.get("messages") if route == "chat" else body.get("prompt")
    include_usage = _asks_for_usage(body)
    async with inference_call(gw, tenant, route, parsed.model, id_prefix,
                              stream=bool(parsed.stream), weight=weight) as call:
        _check_background(gw)
        call.target = target = await _resolve(gw, tenant, parsed.model)
        body["model"] = target.engine_model
        if parsed.stream:
            # The engine always sends usage (metrics, request log); the client only if asked.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            engine_stream = await cancel_on_disconnect(
                request.receive, gw.dispatch.stream(route, target, body))
            call.status = 200
            return _relay(call, engine_stream, request_input, include_usage)
        result = await cancel_on_disconnect(request.receive, gw.dispatch.generate(route, target, body))
        result["id"] = call.response_id
        result["model"] = target.public_model
        call.status = 200
        call.record(request_input, _output_of(result), result.get("usage"))
        return JSONResponse(result)
    return Response(status_code=CLIENT_CLOSED_STATUS)  # the client went away; nobody reads it


def _asks_for_usage(body: dict) -> bool:
    """Whether a stream's client asked for the final usage chunk (``stream_options``)."""
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidInput("stream_options must be an object such as {\"include_usage\": true}",
                           param="stream_options")
    return bool(options.get("include_usage"))


def _relay(call: InferenceCall, engine_stream: OpenStream, request_input: Any,
           include_usage: bool) -> RelayResponse:
    assert call.target is not None
    record = StreamRecord()
    events = rewrite_events(engine_stream, call.response_id, call.target.public_model, record,
                            include_usage=include_usage,
                            idle_timeout_s=call.gw.settings.stream_idle_timeout_s)

    async def close() -> None:
        call.release()
        try:
            await events.aclose()
        finally:
            await engine_stream.aclose()
        if record.first_event_at is not None:
            call.gw.metrics.ttft_seconds.labels(call.route).observe(
                record.first_event_at - call.started)
        call.observe_latency()
        call.record(request_input, record.text, record.usage)

    return RelayResponse(events, on_close=close)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _serve_generation(request, "chat", ChatRequest, "chatcmpl")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _serve_generation(request, "completions", CompletionRequest, "cmpl")


@router.post("/v1/classify")
async def classify(request: Request) -> Response:
    gw = gateway(request)
    tenant = await _tenant(request)
    parsed = _validate(ClassifyRequest, await _json_body(request))
    texts = [parsed.input] if isinstance(parsed.input, str) else list(parsed.input)
    for text in texts:
        _check_prompt_size(len(text), gw.settings.max_model_len)
    weight, counted = parsed.sequences()
    check_weight(weight, gw.settings.max_request_sequences, counted)
    async with inference_call(gw, tenant, "classify", parsed.model, "clf",
                              weight=weight) as call:
        _check_background(gw)
        call.target = target = await _resolve(gw, tenant, parsed.model)
        if target.adapter is None or target.adapter.task != "classification":
            raise InvalidInput(
                f"model {parsed.model!r} is not a classification adapter; /v1/classify needs "
                "an adapter registered with task=classification and labels",
                param="model",
            )
        results = await cancel_on_disconnect(request.receive, gw.dispatch.classify(target, texts))
        call.release()  # the engine work is done
        data = [{"index": i, "label": r.label, "probabilities": r.probabilities}
                for i, r in enumerate(results)]
        call.status = 200
        call.record(parsed.input, [d["label"] for d in data] if len(data) > 1 else data[0]["label"])
        return JSONResponse({"id": call.response_id, "object": "classification",
                             "model": target.public_model, "data": data})
    return Response(status_code=CLIENT_CLOSED_STATUS)


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    gw = gateway(request)
    _check_background(gw)
    ready, detail = await gw.dispatch.ready()
    if not ready:
        raise Unavailable(f"not ready: {detail}", retry_after_s=5)
    return JSONResponse({"status": "ready", "engines": detail})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    gw = gateway(request)
    require_metrics_token(request, gw.settings)
    return Response(gw.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
