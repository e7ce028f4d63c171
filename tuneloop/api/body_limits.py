"""Request bodies are bounded before they are read, and uploads are authenticated first.

FastAPI reads and parses a body (JSON, or a multipart form spooled to disk) before any route
dependency runs, so without this an unauthenticated client could make the server buffer
anything. :class:`BodyLimits` is the outermost ASGI middleware:

- a declared ``Content-Length`` over the route's limit gets 413 at once, nothing read;
- a body without a length (chunked) is counted as it streams and cut off at the limit (413);
- upload routes (multipart: files, adapter versions) and admin routes check the bearer key
  before a single body byte is read (401/403 otherwise).

Limits: the upload routes take ``TUNELOOP_MAX_UPLOAD_BYTES`` / ``TUNELOOP_MAX_ADAPTER_BYTES``
plus a little multipart framing; every other route ``TUNELOOP_MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.errors import InvalidInput, TooLarge, TuneloopError
from services.settings import Settings

MULTIPART_SLACK = 64 * 1024
"""Form fields and multipart boundaries around an upload's file."""

_UPLOADS = (
    (re.compile(r"/v1/files/?"), "max_upload_bytes"),
    (re.compile(r"/v1/adapters/[^/]+/versions/?"), "max_adapter_bytes"),
)

Authenticate = Callable[[Scope, bool], Awaitable[None]]
"""Raises a TuneloopError (401/403) unless the request's key is valid (``admin``: the admin key)."""


@dataclass(frozen=True)
class Route:
    limit: int
    setting: str
    upload: bool
    admin: bool


def route_for(method: str, path: str, settings: Settings) -> Route:
    """The body limit of a request and whether its key is checked before the body is read."""
    if method == "POST":
        for pattern, setting in _UPLOADS:
            if pattern.fullmatch(path):
                limit = getattr(settings, setting) + MULTIPART_SLACK
                return Route(limit, f"TUNELOOP_{setting.upper()}", upload=True, admin=False)
    return Route(settings.max_request_bytes, "TUNELOOP_MAX_REQUEST_BYTES", upload=False,
                 admin=path.startswith("/admin/"))


class BodyLimits:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp, settings: Settings, authenticate: Authenticate) -> None:
        self.app = app
        self.settings = settings
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"]
                                        or b"%00" in scope.get("query_string", b"")):
            # No store can look up (PostgreSQL: not even compare) a text with a NUL in it.
            await _error(send, InvalidInput("the URL has a NUL character (%00); remove it"))
            return
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        route = route_for(scope["method"], scope["path"], self.settings)
        declared = _content_length(scope)
        if declared is not None and declared > route.limit:
            await _error(send, TooLarge(
                f"request body of {declared} bytes is over this route's limit of {route.limit} "
                f"bytes ({route.setting})"))
            return
        if route.upload or route.admin:
            try:
                await self.authenticate(scope, route.admin)
            except TuneloopError as exc:
                await _error(send, exc)
                return
        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > route.limit:
                    exceeded = True
                    # Tell the app the client is gone; the response is replaced with a 413.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _error(send, TooLarge(
                        f"request body is over this route's limit of {route.limit} bytes "
                        f"({route.setting})"))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
            # The app saw the cut-off body as a client that left (ClientDisconnect).
        if exceeded and not started:
            await _error(send, TooLarge(
                f"request body is over this route's limit of {route.limit} bytes ({route.setting})"))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _error(send: Send, exc: TuneloopError) -> None:
    body = json.dumps({"error": {"message": exc.message, "type": exc.type, "code": exc.code,
                                 "param": exc.param}}).encode()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
