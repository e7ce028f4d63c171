"""The FastAPI app factory and the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import RateLimited, TuneloopError, Unavailable
from services.platform import Platform
from services.settings import Settings
from tuneloop.state import MonitorOptions, ServeOptions, open_state

log = logging.getLogger("tuneloop")

def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        if err.get("type") == "json_invalid":
            return "request body is not valid JSON; send a JSON object"
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "invalid request: " + "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TuneloopError)
    async def _tuneloop(_: Request, exc: TuneloopError) -> JSONResponse:
        headers = {}
        if isinstance(exc, (RateLimited, Unavailable)):
            headers["Retry-After"] = str(max(1, round(exc.retry_after_s)))
        return JSONResponse(
            error_body(exc.message, exc.type, exc.code, exc.param), exc.status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            error_body(_validation_message(exc), "invalid_request_error", "invalid_request"), 400
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), "invalid_request_error", code), exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal error; the server log has details", "server_error", "internal_error"),
            500,
        )


def create_app(
    settings: Settings | None = None,
    *,
    platform: Platform | None = None,
    serve: ServeOptions | None = None,
    monitor: MonitorOptions | None = None,
    jobs: dict[str, Any] | None = None,
) -> FastAPI:
    """Build the app: the platform API always; the gateway with ``serve``; the monitor thread
    with ``monitor``; ``jobs`` are options for the job manager. Pass ``platform`` to share one;
    otherwise it is opened on startup (and closed on shutdown)."""
    from tuneloop.api import adapters, admin, deletes, feedback, files, health, inference, policy
    from tuneloop.api import jobs as jobs_api
    from tuneloop.api.body_limits import BodyLimits
    from tuneloop.api.deps import authenticate_scope
    from tuneloop.ui.routes import router as ui_router

    if settings is None:
        settings = platform.settings if platform else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = (platform if platform is not None
                  else await run_in_threadpool(Platform.open, settings))
        if platform is None and opened.generated_admin_key:
            print("tuneloop: generated admin key (shown once, stored hashed): "
                  f"{opened.generated_admin_key}", flush=True)
        # The tokenizer uploads are validated with (seconds, once per process), before the
        # first upload would wait for it.
        await run_in_threadpool(_warm_up, opened)
        try:
            async with open_state(opened, serve=serve, monitor=monitor, jobs=jobs) as state:
                app.state.tuneloop = state
                try:
                    yield
                finally:
                    app.state.tuneloop = None
        finally:
            if platform is None:
                opened.close()

    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan)
    app.state.tuneloop = None
    install_error_handlers(app)
    # Outermost: bodies are bounded (and uploads authenticated) before anything reads them.
    app.add_middleware(BodyLimits, settings=settings, authenticate=authenticate_scope)
    if serve is not None:
        # First: every inference request would otherwise try each platform route's pattern
        # before reaching its own (no paths overlap).
        app.include_router(inference.router)
    for router in (health.router, admin.router, adapters.router, feedback.router, policy.router,
                   files.router, jobs_api.router, deletes.router, deletes.admin_router):
        app.include_router(router)
    app.include_router(ui_router)
    return app


def _warm_up(platform: Platform) -> None:
    from training.jobs.files import warm_up

    try:
        warm_up(platform)
    except Exception as exc:  # noqa: BLE001 - the first upload tries again and reports it
        log.warning("loading the tokenizer for file validation failed: %s", exc)
