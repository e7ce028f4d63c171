"""The few exception types tuneloop raises; the app factory maps each to one HTTP status.

Messages name the bad value and say what to do about it.
"""

from __future__ import annotations


class TuneloopError(Exception):
    """Base class. ``status`` and ``code`` drive the OpenAI-style error body."""

    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidInput(TuneloopError):
    """The request or file is malformed or breaks a rule (400)."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class Unauthorized(TuneloopError):
    """Missing or wrong API key (401)."""

    status = 401
    code = "invalid_api_key"
    type = "authentication_error"


class Forbidden(TuneloopError):
    """The key is valid but may not do this (403)."""

    status = 403
    code = "forbidden"
    type = "permission_error"


class NotFound(TuneloopError):
    """No such object for this caller; another tenant's objects also answer this (404)."""

    status = 404
    code = "not_found"
    type = "invalid_request_error"


class Conflict(TuneloopError):
    """The object exists already or is in the wrong state (409)."""

    status = 409
    code = "conflict"
    type = "invalid_request_error"


class TooLarge(TuneloopError):
    """An upload or body is over its size limit (413)."""

    status = 413
    code = "too_large"
    type = "invalid_request_error"


class RateLimited(TuneloopError):
    """A tenant is over its rate or concurrency limit (429, with Retry-After)."""

    status = 429
    code = "rate_limit_exceeded"
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(TuneloopError):
    """A dependency (engine, store, cluster) is down (503, with Retry-After)."""

    status = 503
    code = "service_unavailable"
    type = "server_error"

    def __init__(self, message: str, *, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
