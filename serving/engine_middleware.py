"""What an engine host puts in front of vLLM's OpenAI server (``--middleware``).

Runs inside the engine process (``tuneloop engine``, or the engine ``tuneloop serve`` spawns),
configured from the ``TUNELOOP_*`` environment:

- **The engine key.** Every request except ``GET /health`` must carry
  ``Authorization: Bearer <TUNELOOP_ENGINE_API_KEY>`` (vLLM's own ``--api-key`` guards only
  ``/v1``; ``/tokenize``, ``/metrics`` and the rest are guarded here), else 401.
- **Adapters by content key.** ``POST /v1/load_lora_adapter`` with ``lora_path`` =
  ``artifact:<sha256>`` fetches that version from the artifact store into the host's bounded
  local cache (:class:`serving.adapter_cache.AdapterCache`, hash verified) and hands vLLM the
  local directory. Gateways on other hosts never send, or need, a path on this host.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
import time
from typing import Any

import anyio
from prometheus_client import REGISTRY, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.artifacts import ArtifactStore, CorruptArtifact, parse_artifact_ref
from services.errors import InvalidInput, NotFound, TuneloopError
from services.settings import Settings
from serving.adapter_cache import AdapterCache

log = logging.getLogger("tuneloop.engine")

OPEN_PATHS = frozenset({"/health", "/ping"})
MAX_LOAD_BODY_BYTES = 64 * 1024
LOAD_PATH = "/v1/load_lora_adapter"


@functools.cache
def _fetch_metrics() -> tuple[Counter, Histogram]:
    """In the engine's default registry, which vLLM's ``/metrics`` serves (created once)."""
    fetches = Counter("tuneloop_engine_adapter_fetches", "Adapter loads by content key on this "
                      "engine, by source (cache: already on local disk; store: fetched).",
                      ["source"], registry=REGISTRY)
    seconds = Histogram("tuneloop_engine_adapter_fetch_seconds", "Time to fetch, verify and "
                        "unpack an adapter version from the artifact store.", registry=REGISTRY,
                        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
    return fetches, seconds


class EngineHostMiddleware:
    """ASGI middleware: the engine key on every route, artifact references on adapter loads."""

    def __init__(self, app: ASGIApp, settings: Settings | None = None) -> None:
        self.app = app
        settings = settings or Settings()
        key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else ""
        self._token = f"Bearer {key}".encode() if key else None
        store = ArtifactStore(settings.resolved_artifacts_url)
        self.cache = AdapterCache(store, settings.data_dir / "engine-adapters",
                                  settings.engine_adapter_cache_entries)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self._token is not None and path not in OPEN_PATHS and not self._authorized(scope):
            await _json(send, 401, "missing or wrong engine key; send TUNELOOP_ENGINE_API_KEY "
                                   "as a bearer token")
            return
        if path == LOAD_PATH and scope.get("method") == "POST":
            await self._load(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(value, self._token)
        return False

    async def _load(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_LOAD_BODY_BYTES:
                await _json(send, 413, f"a load request is at most {MAX_LOAD_BODY_BYTES} bytes")
                return
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
            key = parse_artifact_ref(str(request.get("lora_path", "")))
            if key is not None:
                fetches, seconds = _fetch_metrics()
                cached = key in self.cache.cached()
                started = time.perf_counter()
                directory = await anyio.to_thread.run_sync(self.cache.directory, key)
                fetches.labels("cache" if cached else "store").inc()
                if not cached:
                    seconds.observe(time.perf_counter() - started)
                request["lora_path"] = str(directory)
                body = json.dumps(request).encode()
        except (ValueError, AttributeError) as exc:
            await _json(send, 400, f"load request is not a JSON object: {exc}")
            return
        except TuneloopError as exc:
            # A missing or corrupt version cannot be loaded (4xx: the gateway marks the load
            # failed); anything else is the store being unavailable (503: retried).
            status = (404 if isinstance(exc, NotFound) else 400 if isinstance(exc, InvalidInput)
                      else 422 if isinstance(exc, CorruptArtifact) else 503)
            log.warning("adapter fetch failed: %s", exc.message)
            await _json(send, status, exc.message)
            return
        except OSError as exc:  # the artifact store is unreachable
            log.warning("adapter fetch failed: %r", exc)
            await _json(send, 503, f"the artifact store is unavailable: {exc}")
            return
        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # e.g. http.disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


async def _json(send: Send, status: int, message: str) -> None:
    payload: dict[str, Any] = {"error": {"message": message, "code": status}}
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
