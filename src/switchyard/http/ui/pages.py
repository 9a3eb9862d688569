"""GET /ui and /ui/static/{name}: the console's page and its assets, read from the package, with
the console's security headers (a CSP that allows no inline script, no framing)."""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from switchyard.errors import NotFoundError

__all__ = ["SECURITY_HEADERS", "asset", "index"]

# (x-content-type-options, x-frame-options and referrer-policy come on every answer: http/middleware.py)
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


@cache
def _read(name: str) -> bytes | None:
    if "/" in name or name.startswith(".") or not any(name.endswith(ext) for ext in _TYPES):
        return None
    path = resources.files("switchyard.http.ui") / "static" / name
    return path.read_bytes() if path.is_file() else None


def _page(name: str) -> Response:
    body = _read(name)
    if body is None:
        raise NotFoundError(f"No console asset named '{name}'.")
    media = next(t for ext, t in _TYPES.items() if name.endswith(ext))
    return Response(body, media_type=media, headers=SECURITY_HEADERS)


async def index(request: Request) -> Response:
    return _page("index.html")


async def asset(request: Request) -> Response:
    return _page(request.path_params["name"])
