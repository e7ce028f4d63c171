"""The CLI's HTTP mode: a small client of tuneloop's public API, and what its answers mean as
exit codes.

A command goes through HTTP when it is given ``--url`` (or ``TUNELOOP_URL``); the key
(``--api-key`` / ``TUNELOOP_API_KEY``) says who is asking: the admin key for ``tenants`` and
``keys``, a tenant's key for everything else (the tenant comes from the key). Failures print
one line, ``error: <the API's message>``, and exit with a code that says what failed
(:class:`ExitCode`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import typer

TIMEOUT_S = 30.0
"""Seconds to wait for an answer; uploads and slow routes pass their own."""
CONNECT_TIMEOUT_S = 10.0


class ExitCode(IntEnum):
    """What the exit status of a ``tuneloop`` command means (both modes use 0, 1 and 2)."""

    OK = 0
    FAILED = 1
    """Any other error; ``jobs wait`` / ``jobs create``: the job failed or was cancelled."""
    INVALID_SETTINGS = 2
    """Invalid TUNELOOP_* settings or command-line options."""
    UNAUTHORIZED = 3
    """The key is missing or wrong, or may not do this (HTTP 401, 403)."""
    NOT_FOUND = 4
    """No such tenant, key, adapter, version, file or job for this key (404)."""
    INVALID_INPUT = 5
    """The request, file or adapter was refused (400, 409, 413, 422)."""
    UNAVAILABLE = 6
    """The server could not be reached, or it or its engine is busy or down (429, 5xx)."""


def exit_code_for(status: int) -> ExitCode:
    """The exit code of an HTTP error status."""
    if status in (401, 403):
        return ExitCode.UNAUTHORIZED
    if status == 404:
        return ExitCode.NOT_FOUND
    if status in (400, 409, 413, 422):
        return ExitCode.INVALID_INPUT
    if status == 429 or status >= 500:
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILED


def quoted(value: str | int) -> str:
    """``value`` as one segment of a URL path: '/', '?', '#' and the like cannot change the route
    (``adapters delete 'bot?x'`` must not delete ``bot``)."""
    return quote(str(value), safe="")


class ApiError(Exception):
    """A request that failed: the message to show and the exit code it means."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class Api:
    """Requests to one tuneloop server with one key; every method returns the decoded JSON
    answer and raises :class:`ApiError` for anything but a 2xx."""

    def __init__(self, url: str, http: httpx.Client) -> None:
        self.url = url
        self.http = http

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict | None = None, *, timeout_s: float = TIMEOUT_S) -> Any:
        return self._send("POST", path, json=body, timeout=_timeout(timeout_s))

    def delete(self, path: str, *, timeout_s: float = TIMEOUT_S) -> Any:
        return self._send("DELETE", path, timeout=_timeout(timeout_s))

    def upload(self, path: str, file: Path, fields: dict[str, str | None], *,
               timeout_s: float = 300.0) -> Any:
        """POST ``file`` as the multipart field ``file`` with ``fields`` (None: left out); the
        file is streamed from disk, never read into memory whole."""
        with file.open("rb") as fh:
            return self._send("POST", path, files={"file": (file.name, fh)},
                              data={k: v for k, v in fields.items() if v is not None},
                              timeout=_timeout(timeout_s))

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ApiError(f"cannot reach tuneloop at {self.url} ({_reason(exc)}); is it "
                           "running, and is --url (TUNELOOP_URL) right?",
                           ExitCode.UNAVAILABLE) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(f"tuneloop at {self.url} did not answer {method} {path} in time "
                           f"({_reason(exc)}); retry later", ExitCode.UNAVAILABLE) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"{method} {self.url}{path} failed: {_reason(exc)}",
                           ExitCode.UNAVAILABLE) from exc
        if not response.is_success:
            raise ApiError(_error_message(response), exit_code_for(response.status_code))
        try:
            return response.json() if response.content else None
        except ValueError as exc:
            raise ApiError(f"{method} {response.request.url} answered something that is not "
                           "JSON (is --url a tuneloop server?)", ExitCode.FAILED) from exc


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=CONNECT_TIMEOUT_S)


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _error_message(response: httpx.Response) -> str:
    """The message of the API's OpenAI-style error body, else what little the answer says."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    if isinstance(message, str) and message:
        return message
    request = response.request
    if response.is_redirect:
        return (f"{request.url} redirects to {response.headers.get('location')}; pass that "
                "server as --url")
    return (f"{request.method} {request.url} answered HTTP {response.status_code} "
            f"{response.reason_phrase} (is --url a tuneloop server?)")


@contextmanager
def connect(url: str, api_key: str | None) -> Iterator[Api]:
    """An :class:`Api` on ``url`` with ``api_key``; an :class:`ApiError` in the block becomes
    ``error: <message>`` on stderr and its exit code."""
    url = url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        typer.echo(f"error: --url {url!r} is not an http(s) URL; use e.g. http://localhost:8000",
                   err=True)
        raise typer.Exit(ExitCode.INVALID_SETTINGS)
    if not api_key:
        typer.echo(f"error: talking to {url} needs an API key: pass --api-key or set "
                   "TUNELOOP_API_KEY (the admin key for tenants and keys)", err=True)
        raise typer.Exit(ExitCode.UNAUTHORIZED)
    try:
        with httpx.Client(base_url=url, timeout=_timeout(TIMEOUT_S),
                          headers={"Authorization": f"Bearer {api_key}"}) as http:
            yield Api(url, http)
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(exc.exit_code) from exc
