"""ReDoc at /redoc with nothing fetched from outside the server.

fastapi-offline ships ReDoc's bundle, but the bundle hard-codes one outside URL: its footer's
Redocly logo (cdn.redoc.ly), requested on every page view. On a private network that request
fails and the browser logs an error (the dashboard's browser tests caught it). So /redoc loads the
same bundle served from here, with that one URL pointed at the package's local favicon; nothing
else in the bundle changes.
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html
from starlette.responses import HTMLResponse, Response

STATIC_URL = "/static-offline-docs"  # fastapi-offline's mount of its own assets
BUNDLE_URL = "/redoc/redoc.standalone.js"
_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def local_bundle() -> bytes:
    bundle = (Path(fastapi_offline.__file__).parent / "static" / "redoc.standalone.js").read_bytes()
    if _LOGO.encode() not in bundle:  # a ReDoc release that moved its logo: the test of this module says so
        return bundle
    return bundle.replace(_LOGO.encode(), f"{STATIC_URL}/favicon.png".encode())


def install_redoc(app: FastAPI, url: str = "/redoc") -> None:
    """Serve /redoc (create the app with `redoc_url=None`: fastapi-offline's page loads the original)."""

    @app.get(url, include_in_schema=False)
    async def redoc_page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{BUNDLE_URL}", redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
                              with_google_fonts=False)

    @app.get(BUNDLE_URL, include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(local_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})
