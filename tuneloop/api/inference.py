"""OpenAI-compatible routes: models, chat, completions, classify, readiness, metrics.

Each route: authenticate -> admit (tenant limits) -> resolve the model -> dispatch to an engine
-> rewrite ``id``/``model`` -> record in the request log. Streaming responses are passed through
chunk by chunk; a client that disconnects cancels the engine request.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from monitoring.request_log import LogRecord
from services import registry
from services.errors import InvalidInput, TooLarge, TuneloopError, Unavailable
from services.store.models import Tenant
from serving.gateway.disconnect import CLIENT_CLOSED_STATUS, ClientGone, cancel_on_disconnect
from serving.gateway.schemas import ChatRequest, ClassifyRequest, CompletionRequest
from serving.gateway.streaming import RelayResponse, StreamRecord, rewrite_events
from tuneloop.api.deps import cached_tenant, current_tenant, gateway, platform

router = APIRouter(tags=["serving"])

MAX_BODY_BYTES = 8 * 1024 * 1024


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise TooLarge(f"request body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object")
    return body


def _validate(schema, body: dict):  # noqa: ANN001, ANN202
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
    return cached_tenant(request) or await run_in_threadpool(current_tenant, request)


async def _resolve(gw, tenant: Tenant, model: str):  # noqa: ANN001, ANN202
    hit = gw.resolver.cached(tenant, model)
    if hit is not None:
        return hit
    return await run_in_threadpool(gw.resolver.resolve, tenant, model)


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@router.get("/v1/models")
def list_models(request: Request, tenant: Tenant = Depends(current_tenant)) -> dict:
    p = platform(request)
    created = int(time.time())
    data = [{"id": p.base_model_name, "object": "model", "created": created, "owned_by": "tuneloop"}]
    with p.store.read() as session:
        for adapter in registry.list_adapters(session, tenant):
            versions = registry.list_versions(session, adapter)
            champion = next((v for v in versions if v.id == adapter.champion_version_id), None)
            if champion is not None:
                data.append({"id": adapter.name, "object": "model", "created": created,
                             "owned_by": tenant.name, "parent": p.base_model_name,
                             "root": registry.version_ref(adapter.name, champion.version)})
            for v in versions:
                if v.state == "ready":
                    data.append({"id": registry.version_ref(adapter.name, v.version),
                                 "object": "model", "created": int(v.created_at.timestamp()),
                                 "owned_by": tenant.name, "parent": p.base_model_name})
    return {"object": "list", "data": data}


async def _serve_generation(request: Request, route: str, schema, id_prefix: str):  # noqa: ANN001, ANN202
    gw = gateway(request)
    started = time.perf_counter()
    tenant = await _tenant(request)
    body = await _json_body(request)
    parsed = _validate(schema, body)
    if route == "chat":
        text_len = sum(len(m.content) if isinstance(m.content, str) else len(json.dumps(m.content))
                       for m in parsed.messages)
    else:
        text_len = len(json.dumps(parsed.prompt))
    _check_prompt_size(text_len, gw.settings.max_model_len)
    response_id = _new_id(id_prefix)
    status, adapter_label = 500, parsed.model
    admission = gw.limiter.admit(tenant.name)
    admission.__enter__()
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            admission.__exit__(None, None, None)

    try:
        target = await _resolve(gw, tenant, parsed.model)
        adapter_label = target.adapter.name if target.adapter else "base"
        body["model"] = target.engine_model
        if parsed.stream:
            if route == "chat":
                so = body.get("stream_options") or {}
                body["stream_options"] = {**so, "include_usage": True}
            engine_stream = await cancel_on_disconnect(
                request.receive, gw.dispatch.stream(route, target, body))
            status = 200
            return _relay(gw, engine_stream, response_id, target, tenant, route, body, started, release)
        result = await cancel_on_disconnect(request.receive, gw.dispatch.generate(route, target, body))
        result["id"] = response_id
        result["model"] = target.public_model
        status = 200
        usage = result.get("usage") or {}
        _log(gw, tenant, route, status, response_id, target, body, result, started, usage)
        return JSONResponse(result)
    except TuneloopError as exc:
        status = exc.status
        raise
    except ClientGone:
        status = CLIENT_CLOSED_STATUS
        return Response(status_code=status)  # nobody reads it
    finally:
        if not parsed.stream or status != 200:
            release()
        gw.metrics.requests.labels(*gw.metrics.labels_for(tenant.name, adapter_label), route,
                                   str(status)).inc()
        if not parsed.stream:
            gw.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)


def _relay(gw, engine_stream, response_id, target, tenant, route, body, started, release):  # noqa: ANN001, ANN202
    record = StreamRecord()
    events = rewrite_events(engine_stream, response_id, target.public_model, record)

    async def close() -> None:
        release()
        try:
            await events.aclose()
        finally:
            await engine_stream.aclose()
        if record.first_event_at is not None:
            gw.metrics.ttft_seconds.labels(route).observe(record.first_event_at - started)
        gw.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
        _log(gw, tenant, route, 200, response_id, target, body, record.text, started, record.usage)

    return RelayResponse(events, on_close=close)


def _log(gw, tenant, route, status, response_id, target, body, output, started, usage) -> None:  # noqa: ANN001
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    completion_tokens = int(usage.get("completion_tokens") or 0)
    gw.metrics.tokens.labels(gw.metrics.tenant_label(tenant.name), "in").inc(prompt_tokens)
    gw.metrics.tokens.labels(gw.metrics.tenant_label(tenant.name), "out").inc(completion_tokens)
    if gw.request_log is None:
        return
    if isinstance(output, dict):
        choices = output.get("choices") or []
        output = [c.get("message", {}).get("content") if "message" in c else c.get("text")
                  for c in choices]
        output = output[0] if len(output) == 1 else output
    request_input = body.get("messages") if route == "chat" else body.get("prompt")
    gw.request_log.record(LogRecord(
        id=response_id, tenant_id=tenant.id, route=route, status=status,
        adapter=target.adapter.name if target.adapter else None,
        adapter_version=target.adapter.version if target.adapter else None,
        input=request_input, output=output,
        latency_ms=(time.perf_counter() - started) * 1000,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
    ))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):  # noqa: ANN201
    return await _serve_generation(request, "chat", ChatRequest, "chatcmpl")


@router.post("/v1/completions")
async def completions(request: Request):  # noqa: ANN201
    return await _serve_generation(request, "completions", CompletionRequest, "cmpl")


@router.post("/v1/classify")
async def classify(request: Request) -> Response:
    gw = gateway(request)
    started = time.perf_counter()
    tenant = await _tenant(request)
    parsed = _validate(ClassifyRequest, await _json_body(request))
    texts = [parsed.input] if isinstance(parsed.input, str) else list(parsed.input)
    for text in texts:
        _check_prompt_size(len(text), gw.settings.max_model_len)
    status, adapter_label = 500, parsed.model
    try:
        with gw.limiter.admit(tenant.name):
            target = await _resolve(gw, tenant, parsed.model)
            adapter_label = target.adapter.name if target.adapter else "base"
            if target.adapter is None or target.adapter.task != "classification":
                raise InvalidInput(
                    f"model {parsed.model!r} is not a classification adapter; /v1/classify needs "
                    "an adapter registered with task=classification and labels",
                    param="model",
                )
            results = await cancel_on_disconnect(request.receive, gw.dispatch.classify(target, texts))
        response_id = _new_id("clf")
        data = [{"index": i, "label": r.label, "probabilities": r.probabilities}
                for i, r in enumerate(results)]
        status = 200
        if gw.request_log is not None:
            gw.request_log.record(LogRecord(
                id=response_id, tenant_id=tenant.id, route="classify", status=200,
                adapter=target.adapter.name, adapter_version=target.adapter.version,
                input=parsed.input, output=[d["label"] for d in data] if len(data) > 1 else data[0]["label"],
                latency_ms=(time.perf_counter() - started) * 1000,
            ))
        return JSONResponse({"id": response_id, "object": "classification",
                             "model": target.public_model, "data": data})
    except TuneloopError as exc:
        status = exc.status
        raise
    except ClientGone:
        status = CLIENT_CLOSED_STATUS
        return Response(status_code=status)
    finally:
        gw.metrics.requests.labels(*gw.metrics.labels_for(tenant.name, adapter_label), "classify",
                                   str(status)).inc()
        gw.metrics.request_seconds.labels("classify").observe(time.perf_counter() - started)


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    gw = gateway(request)
    ready, detail = await gw.dispatch.ready()
    if not ready:
        raise Unavailable(f"not ready: {detail}", retry_after_s=5)
    return JSONResponse({"status": "ready", "engines": detail})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(gateway(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
