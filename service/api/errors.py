"""RFC 9457 problem details (`application/problem+json`) for every error the API returns.

Route code raises `ApiProblem`; the handlers below also turn Starlette's HTTP errors (unknown
route 404, wrong method 405), request validation errors and unhandled exceptions into problems.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.blobs import BlobStoreUnavailable
from service.disk import WAY_OUT, is_disk_full

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger(__name__)


def problem_type(code: str | None) -> str:
    """A stable URI per error code; `about:blank` when the HTTP status says it all (RFC 9457 §4.2.1)."""
    return f"urn:adaptinf:problem:{code}" if code else "about:blank"


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class ApiProblem(Exception):
    """An error answered as problem+json.

    Args:
        status: HTTP status code.
        detail: what went wrong, precisely enough for the user to act on it.
        code: short snake_case code; becomes the `code` member and the `type` URI.
        title: short summary; defaults to the status phrase.
        headers: extra response headers (e.g. WWW-Authenticate).
        **extra: extension members added to the body (e.g. line, sample_id, field).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str | None = None,
        title: str | None = None,
        type: str | None = None,  # noqa: A002 - the RFC's member name
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.title = title or _title(status)
        self.type = type or problem_type(code)
        self.headers = headers
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status, "detail": self.detail}
        if instance:
            out["instance"] = instance
        if self.code:
            out["code"] = self.code
        out.update(self.extra)
        return out

    def to_response(self, instance: str | None = None) -> JSONResponse:
        return JSONResponse(
            jsonable_encoder(self.body(instance)),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_MEDIA_TYPE,
        )


def not_found(kind: str, id: str) -> ApiProblem:  # noqa: A002
    """The answer for a missing resource, and for another owner's (they must look the same)."""
    return ApiProblem(404, f"no {kind} with id {id!r}", code="not_found")


def insufficient_storage(what: str) -> ApiProblem:
    """The answer when the disk is full: what could not be written, and the way out (507)."""
    return ApiProblem(507, f"the server's disk is full: {what} could not be written; {WAY_OUT} and try again",
                      code="insufficient_storage")


@contextmanager
def disk_full_is_507(what: str) -> Iterator[None]:
    """Inside, a full disk (OSError ENOSPC/EDQUOT, SQL "disk full") becomes a 507 naming `what`."""
    try:
        yield
    except (OSError, DBAPIError) as exc:
        if not is_disk_full(exc):
            raise
        log.warning("disk full: %s could not be written: %s", what, exc)
        raise insufficient_storage(what) from None


@contextmanager
def ingest_problems() -> Iterator[None]:
    """Inside, an ingest rejection becomes its problem+json, with where it is (line, row group and
    row, shard, sample id, field, member) as extension members."""
    from service.ingest.errors import LOCATION_KEYS, IngestError  # the ingest package loads with its routes

    try:
        yield
    except IngestError as exc:
        where = {k: v for k in LOCATION_KEYS if (v := getattr(exc, k, None)) is not None}
        raise ApiProblem(exc.status, exc.detail, code=exc.code, **where) from None


def _loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'items', 0, 'name') -> 'body.items[0].name'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


async def _on_api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
    return exc.to_response(request.url.path)


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _title(exc.status_code) else None
    if detail is None:
        if exc.status_code == 404:
            detail = f"no route matches {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        else:
            detail = _title(exc.status_code)
    problem = ApiProblem(exc.status_code, detail, headers=getattr(exc, "headers", None))
    return problem.to_response(request.url.path)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": _loc_to_path(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    problem = ApiProblem(
        422, f"{first['field']}: {first['message']}{more}", code="validation_error", errors=errors
    )
    return problem.to_response(request.url.path)


async def _on_unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Any error no route handled: a full disk (OSError, SQL) where a route did not name it itself is
    a 507, an unreachable blob store a 503, anything else a 500 whose traceback goes to the log only.

    One handler for `Exception`, not one per type: Starlette runs this one outermost, only while no
    response has started, whereas a handler for OSError would turn an error in the middle of a
    streamed download (a reset connection) into "response already started"."""
    if is_disk_full(exc):
        log.warning("disk full on %s %s: %s", request.method, request.url.path, exc)
        what = "the database" if isinstance(exc, DBAPIError) else "a file of this request"
        return insufficient_storage(what).to_response(request.url.path)
    if isinstance(exc, BlobStoreUnavailable):  # an S3 bucket down or refusing us: try again later
        log.error("blob store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return ApiProblem(503, "the blob store is unavailable; try again later (the server's log names the "
                          "setting to check)", code="blob_store_unavailable",
                          headers={"Retry-After": "30"}).to_response(request.url.path)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = ApiProblem(500, "the server hit an unexpected error; it has been logged", code="internal_error")
    return problem.to_response(request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _on_api_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unhandled)
