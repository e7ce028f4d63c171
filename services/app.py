"""The FastAPI app factory and the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.errors import RateLimited, TuneloopError, Unavailable
from services.platform import Platform
from services.settings import Settings

log = logging.getLogger("tuneloop")

# Hooks that extend the app (serving gateway, monitoring) without services importing them.
AppExtension = Callable[[FastAPI], None]


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
    extensions: list[AppExtension] | None = None,
) -> FastAPI:
    """Build the app. Pass ``platform`` to share one; otherwise it is opened on startup."""
    from services.api import adapters, admin, feedback, health, jobs, policy

    if settings is None:
        settings = platform.settings if platform else Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.platform is None
        if owned:
            app.state.platform = Platform.open(settings)
            if app.state.platform.generated_admin_key:
                print(
                    "tuneloop: generated admin key (shown once, stored hashed): "
                    f"{app.state.platform.generated_admin_key}",
                    flush=True,
                )
        async with _run_hooks(app):
            yield
        if owned:
            app.state.platform.close()

    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan)
    app.state.platform = platform
    app.state.startup_hooks = []  # async context managers entered in lifespan
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(adapters.router)
    app.include_router(feedback.router)
    app.include_router(policy.router)  # retrain policy, drift reports, monitor events
    jobs.install(app)  # /v1/files, /v1/fine_tuning/jobs and the background job manager
    for extend in extensions or []:
        extend(app)
    return app


@asynccontextmanager
async def _run_hooks(app: FastAPI) -> AsyncIterator[None]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        for hook in app.state.startup_hooks:
            await stack.enter_async_context(hook(app))
        yield
