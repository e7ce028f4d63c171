"""Async HTTP client for one vLLM OpenAI server (local or remote).

Request bodies are plain OpenAI dicts passed through unchanged; responses come back as parsed
JSON (or raw SSE lines for streams). Transport failures become :class:`Unavailable` (503 with
Retry-After), engine 4xx become :class:`InvalidInput` / :class:`NotFound` / :class:`TooLarge`
with the engine's message, so the gateway maps every failure without knowing aiohttp or vLLM.
Cancelling the awaiting task (a client disconnect) closes the HTTP request, which makes vLLM
abort the generation.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiohttp

from services.errors import InvalidInput, NotFound, TooLarge, TuneloopError, Unavailable

JSON = dict[str, Any]
log = logging.getLogger("tuneloop.engine_client")
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)
_JSON_HEADERS = {"content-type": "application/json"}
# Below uvicorn's (vLLM's server) 5 s keep-alive, so an idle pooled connection is dropped here
# before the engine closes it under a request.
KEEPALIVE_S = 4.0
class EngineAdapterMissing(NotFound):
    """The engine does not know the requested model/adapter name (it may have restarted)."""

    code = "model_not_found"


class EngineError(Unavailable):
    """The engine answered 5xx: treated as unavailable so callers retry later."""

    code = "engine_error"


def engine_error(status: int, body: bytes | str, *, url: str, retry_after_s: float) -> TuneloopError:
    """Map an engine error response to a tuneloop error carrying the engine's own message."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    message = text[:1000]
    param = None
    try:
        err = json.loads(text)
        err = err.get("error", err) if isinstance(err, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            param = err.get("param")
    except ValueError:
        pass
    if status == 401:
        return EngineError(
            f"engine {url} refused the engine key; give gateways and engines the same "
            "TUNELOOP_ENGINE_API_KEY", retry_after_s=retry_after_s)
    if status == 404:
        return EngineAdapterMissing(f"engine {url}: {message}")
    if status == 413:
        return TooLarge(f"engine {url}: {message}")
    if 400 <= status < 500:
        return InvalidInput(f"engine {url} rejected the request: {message}", param=param)
    return EngineError(f"engine {url} failed ({status}): {message}", retry_after_s=retry_after_s)


class EngineStream:
    """An open streaming response: iterate for raw SSE ``data: ...`` lines, then close.

    The status was checked when the stream was opened, so iteration yields only content lines
    (blank separators dropped; the final ``data: [DONE]`` included). Closing early (or the
    consumer being cancelled) closes the connection, which aborts the generation in vLLM.
    """

    def __init__(self, response: aiohttp.ClientResponse, *, url: str, retry_after_s: float) -> None:
        self._response = response
        self._url = url
        self._retry_after_s = retry_after_s
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[str]:
        buffer = b""
        try:
            # Chunks split into lines here: no line-length limit (logprobs events can be long).
            async for chunk in self._response.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line := line.rstrip(b"\r"):
                        yield line.decode()
            if buffer.strip():
                yield buffer.strip().decode()
            self._finished = True
        except _TRANSPORT_ERRORS as exc:
            raise Unavailable(f"engine {self._url} dropped the stream: {type(exc).__name__}",
                              retry_after_s=self._retry_after_s) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Give the connection back after a complete stream; otherwise close it (abort)."""
        if self._finished:
            self._response.release()
        else:
            self._response.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class EngineClient:
    """Client of one engine at ``base_url`` (``http://host:port``, without ``/v1``).

    One pooled keep-alive HTTP/1.1 session (aiohttp: far less per-request overhead than httpx
    on the gateway's hot path), created on first use inside the running loop. ``session`` lets
    tests inject one (trace hooks). ``timeout_s`` bounds the wait for each read from the engine.
    ``label`` names the engine in error messages, which reach tenants: the gateway passes the
    engine's slot name, so no internal address leaves the cluster (default: the URL).
    Call :meth:`aclose` when done.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        retry_after_s: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        api_key: str | None = None,
        label: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.label = label or self.base_url
        # The engine key (vLLM --api-key), sent with every request.
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retry_after_s = retry_after_s
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._session = session
        self._closed = False
        self.reachable = True
        """False after a transport failure, True again after the next answered request."""

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise Unavailable(f"the client of engine {self.label} is closed (shutting down)",
                              retry_after_s=self.retry_after_s)
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s,
                                              sock_read=self.timeout_s),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the session; later calls answer :class:`Unavailable` instead of reopening it."""
        self._closed = True
        if self._session is not None:
            await self._session.close()

    # -- OpenAI routes --------------------------------------------------------------------

    async def health(self) -> bool:
        """True when ``/health`` answers 200; never raises."""
        if self._closed:
            return False
        try:
            async with self.session.get(f"{self.base_url}/health",
                                        timeout=aiohttp.ClientTimeout(total=5.0)) as response:
                ok = response.status == 200
        except _TRANSPORT_ERRORS:
            ok = False
        self.reachable = ok
        return ok
    async def list_models(self) -> list[JSON]:
        """``GET /v1/models``: the base model and every loaded adapter (``data`` entries)."""
        return (await self._request("GET", "/v1/models"))["data"]

    async def chat_completions(self, body: JSON) -> JSON:
        """``POST /v1/chat/completions`` without streaming; returns the parsed response."""
        return await self._request("POST", "/v1/chat/completions", {**body, "stream": False})

    async def completions(self, body: JSON, *, timeout_s: float | None = None) -> JSON:
        """``POST /v1/completions`` without streaming; returns the parsed response.

        ``timeout_s`` overrides the client's per-request timeout (probes use a short one).
        """
        return await self._request("POST", "/v1/completions", {**body, "stream": False},
                                   timeout_s=timeout_s)

    async def open_chat_stream(self, body: JSON) -> EngineStream:
        """Start a streaming chat completion; errors raise here, before any byte is relayed."""
        return await self._open_stream("/v1/chat/completions", body)

    async def open_completions_stream(self, body: JSON) -> EngineStream:
        """Start a streaming completion; errors raise here, before any byte is relayed."""
        return await self._open_stream("/v1/completions", body)

    async def stream_chat_completions(self, body: JSON) -> AsyncIterator[str]:
        """Raw SSE lines of a streaming chat completion (convenience over :meth:`open_chat_stream`)."""
        async with await self.open_chat_stream(body) as stream:
            async for line in stream:
                yield line

    async def tokenize(self, body: JSON) -> JSON:
        """``POST /tokenize`` (vLLM): ``{"model", "prompt"}`` or ``{"model", "messages", ...}``."""
        return await self._request("POST", "/tokenize", body)

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """Load the PEFT adapter directory ``path`` under the engine-side ``name``."""
        await self._request("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload_lora_adapter(self, name: str) -> None:
        """Unload ``name``; raises :class:`EngineAdapterMissing` if the engine does not have it."""
        await self._request("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    # -- transport ------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> Unavailable:
        self.reachable = False
        kind = "timed out" if isinstance(exc, TimeoutError) else "is unreachable"
        if self.label == self.base_url:
            detail = repr(exc)
        else:  # the exception names the address: keep it in the log, out of the message
            log.warning("engine %s (%s) %s: %r", self.label, self.base_url, kind, exc)
            detail = type(exc).__name__
        return Unavailable(f"engine {self.label} {kind}: {detail}",
                           retry_after_s=self.retry_after_s)

    def _timeout(self, timeout_s: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=timeout_s, sock_connect=self.connect_timeout_s)

    async def _request(
        self, method: str, path: str, body: JSON | None = None, *, timeout_s: float | None = None
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        extra: dict[str, Any] = {} if timeout_s is None else {"timeout": self._timeout(timeout_s)}
        try:
            async with self.session.request(
                method, f"{self.base_url}{path}", data=data,
                headers={**self._auth, **(_JSON_HEADERS if data is not None else {})}, **extra,
            ) as response:
                status, content = response.status, await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self.reachable = True
        if status >= 400:
            raise engine_error(status, content, url=self.label, retry_after_s=self.retry_after_s)
        if not content:
            return None
        try:
            return json.loads(content)
        except ValueError:
            return content.decode(errors="replace")  # load/unload answer plain text

    async def _open_stream(self, path: str, body: JSON) -> EngineStream:
        data = json.dumps({**body, "stream": True}).encode()
        try:
            response = await self.session.post(f"{self.base_url}{path}", data=data,
                                               headers={**self._auth, **_JSON_HEADERS})
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        self.reachable = True
        if response.status >= 400:
            try:
                content = await response.read()
            except _TRANSPORT_ERRORS:
                content = b""
            finally:
                response.release()
            raise engine_error(response.status, content, url=self.label,
                               retry_after_s=self.retry_after_s)
        return EngineStream(response, url=self.label, retry_after_s=self.retry_after_s)
