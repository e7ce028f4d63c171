"""Routes of the console: the page at ``/ui`` and its assets, with strict security headers.

The page holds no data and no secret; it calls the JSON API with the key the user pasted, sent
as a bearer header (no cookies, so no CSRF surface). The headers forbid inline scripts, eval,
third-party origins and framing, so a string that slips into the DOM as markup still cannot run.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from services.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Asset names are plain: no path separators, so a request cannot leave STATIC_DIR.
_ASSET_NAME = re.compile(r"[a-z][a-z0-9_]*\.(js|css)")
_MEDIA_TYPES = {"js": "text/javascript", "css": "text/css"}

router = APIRouter(prefix="/ui", tags=["console"], include_in_schema=False)


@router.get("")
def index() -> Response:
    """The console page (the same for every user; who you are comes from the pasted key)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/")
def index_slash() -> Response:
    return RedirectResponse("/ui", status_code=308, headers=SECURITY_HEADERS)


@router.get("/assets/{name}")
def asset(name: str) -> Response:
    """A script or stylesheet of the console; NotFound for any other name."""
    match = _ASSET_NAME.fullmatch(name)
    path = STATIC_DIR / name
    if match is None or not path.is_file():
        raise NotFound(f"no console asset named {name!r}", param="name")
    return FileResponse(path, media_type=_MEDIA_TYPES[match.group(1)],
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
