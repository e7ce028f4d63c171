"""One inference request's bookkeeping, as an ``async with`` block around the route's work:
tenant admission (a slot held until the response ends), the request and latency metrics, the
token counters and the request log.

    async with inference_call(gw, tenant, "chat", parsed.model, "chatcmpl") as call:
        call.target = await resolve(...)
        ...
        return JSONResponse(...)
    return Response(status_code=CLIENT_CLOSED_STATUS)  # the client went away (suppressed)

A streaming request (``stream=True``) that started its stream keeps the slot: the stream's
close calls :meth:`InferenceCall.release` and records the request and its latency.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from monitoring.request_log import LogRecord
from services.errors import TuneloopError
from services.store.models import Tenant
from serving.gateway.disconnect import CLIENT_CLOSED_STATUS, ClientGone
from serving.gateway.resolution import Target
from serving.gateway.runtime import Gateway


def new_response_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class InferenceCall:
    """What the bookkeeping knows about one request while it runs."""

    gw: Gateway
    tenant: Tenant
    route: str
    model: str
    """The model the client asked for (the metrics' adapter label until it resolves)."""
    response_id: str
    started: float = field(default_factory=time.perf_counter)
    target: Target | None = None
    status: int = 500
    stream: bool = False
    _slot: ExitStack = field(default_factory=ExitStack)

    @property
    def adapter_label(self) -> str:
        if self.target is None:  # never the raw ``model`` a client sent: unbounded label values
            return "unresolved"
        return self.target.adapter.name if self.target.adapter else "base"

    def release(self) -> None:
        """Give the tenant's slot back (idempotent)."""
        self._slot.close()

    def observe_latency(self) -> None:
        self.gw.metrics.request_seconds.labels(self.route).observe(
            time.perf_counter() - self.started)

    def record(self, request_input: Any, output: Any, usage: dict[str, Any] | None = None) -> None:
        """Count tokens and write the request log entry of a served response."""
        usage = usage or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        metrics = self.gw.metrics
        if self.route != "classify":
            metrics.tokens.labels(metrics.tenant_label(self.tenant.name), "in").inc(prompt_tokens)
            metrics.tokens.labels(metrics.tenant_label(self.tenant.name), "out").inc(
                completion_tokens)
        if self.gw.request_log is None:
            return
        adapter = self.target.adapter if self.target is not None else None
        self.gw.request_log.record(LogRecord(
            id=self.response_id, tenant_id=self.tenant.id, route=self.route, status=self.status,
            adapter=adapter.name if adapter else None,
            adapter_version=adapter.version if adapter else None,
            input=request_input, output=output,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        ))


@asynccontextmanager
async def inference_call(gw: Gateway, tenant: Tenant, route: str, model: str, id_prefix: str,
                         *, stream: bool = False, weight: int = 1
                         ) -> AsyncIterator[InferenceCall]:
    """Admit the request as ``weight`` sequences (raises RateLimited) and do its bookkeeping
    however it ends; a client that went away (:class:`ClientGone`) is suppressed with 499."""
    call = InferenceCall(gw, tenant, route, model, new_response_id(id_prefix), stream=stream)
    call._slot.enter_context(gw.limiter.admit(tenant.name, weight))
    try:
        yield call
    except TuneloopError as exc:
        call.status = exc.status
        raise
    except ClientGone:
        call.status = CLIENT_CLOSED_STATUS
    finally:
        if not call.stream or call.status != 200:
            call.release()
        gw.metrics.requests.labels(*gw.metrics.labels_for(tenant.name, call.adapter_label),
                                   route, str(call.status)).inc()
        if not call.stream:
            call.observe_latency()
