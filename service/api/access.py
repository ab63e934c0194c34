"""Which unauthenticated routes stay public: /metrics (ADAPTINF_PUBLIC_METRICS) and the API's
documents /docs, /redoc, /openapi.json (ADAPTINF_PUBLIC_DOCS). Set false, they need an API key.

A middleware, not a route dependency: the document routes are built by FastAPI itself.
/healthz and /readyz always stay public (orchestrators probe them without keys), and /ui is
static files whose data requests carry a key anyway.
"""
from __future__ import annotations

from starlette._utils import get_route_path  # Starlette's own routing uses it
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import ApiProblem
from service.api.redoc import BUNDLE_URL
from service.auth import authenticate
from service.config import Settings

DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", BUNDLE_URL, "/openapi.json")


def keyed_paths(settings: Settings) -> frozenset[str]:
    """The otherwise public paths this server's settings put behind a key."""
    return frozenset((() if settings.public_metrics else ("/metrics",)) + (() if settings.public_docs else DOC_PATHS))


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            return key.strip() if scheme.lower() == "bearer" and key.strip() else None
    return None


class KeyGate:
    """Answer 401 problem+json on `paths` unless the request carries a valid API key."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The path as routed: behind a proxy's root path (uvicorn --root-path /x) scope["path"] is
        # /x/docs, and the gate must still see /docs.
        path = get_route_path(scope) if scope["type"] == "http" else ""
        if scope["type"] == "http" and path in self.paths and not await self._allowed(scope):
            problem = ApiProblem(401, f"{path} needs an API key on this server: send "
                                 "'Authorization: Bearer <key>'", code="unauthorized",
                                 headers={"WWW-Authenticate": "Bearer"})
            await problem.to_response(scope["path"])(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _allowed(self, scope: Scope) -> bool:
        key = _bearer(scope)
        if key is None:
            return False

        def check() -> bool:
            with scope["app"].state.sessionmaker() as session:
                return authenticate(session, key) is not None

        return await run_in_threadpool(check)
