"""Refuse text no store can hold before it reaches a route: a NUL character or an unpaired
surrogate in the path, the query string or a JSON body is a problem+json naming where it is, and
so is a JSON number that is not finite (NaN, Infinity, 1e400).

PostgreSQL rejects NUL in text; without this, psycopg's refusal surfaced as a 500 on about twenty
routes (ids in paths, query filters, JSON strings). Multipart text fields are checked where the
upload route reads them.
"""
from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.text import text_problem
from service.api.errors import ApiProblem

MAX_JSON_BODY = 1 << 20  # JSON bodies are configs and id lists; uploads are multipart


def _decoded(raw: bytes) -> str | None:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _walk(value: Any, where: str) -> ApiProblem | None:
    """The first string (key or value) of a decoded JSON document that cannot be stored."""
    if isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            return ApiProblem(422, f"{where}: {problem}", code="invalid_text", field=where)
    elif isinstance(value, float) and not math.isfinite(value):
        # Python's JSON reader takes NaN and Infinity, and reads 1e400 as infinity
        return ApiProblem(422, f"{where}: must be a finite number, got {value!r}", code="invalid_number", field=where)
    elif isinstance(value, dict):
        for key, item in value.items():
            if (problem := text_problem(key)) is not None:
                return ApiProblem(422, f"{where}: a key {problem}", code="invalid_text", field=where)
            if (found := _walk(item, f"{where}.{key}")) is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _walk(item, f"{where}[{i}]")) is not None:
                return found
    return None


def _url_problem(scope: Scope) -> ApiProblem | None:
    path = _decoded(scope.get("raw_path") or scope["path"].encode("utf-8", "surrogatepass"))
    if path is None or text_problem(path):
        why = "is not valid UTF-8" if path is None else text_problem(path)
        return ApiProblem(400, f"the path {why}", code="invalid_text", field="path")
    for pair in scope.get("query_string", b"").split(b"&"):
        name, _, value = pair.partition(b"=")
        key, text = _decoded(name.replace(b"+", b" ")), _decoded(value.replace(b"+", b" "))
        label = f"query.{key}" if key is not None and not text_problem(key) else "query"
        for part in (key, text):
            if part is None:
                return ApiProblem(400, f"{label}: not valid UTF-8", code="invalid_text", field=label)
            if (problem := text_problem(part)) is not None:
                return ApiProblem(400, f"{label}: {problem}", code="invalid_text", field=label)
    return None


class TextGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (problem := _url_problem(scope)) is not None:
            await problem.to_response(scope["path"])(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not headers.get(b"content-type", b"").split(b";")[0].strip().endswith(b"json"):
            await self.app(scope, receive, send)
            return
        body, messages = b"", []
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if len(body) > MAX_JSON_BODY:
                problem = ApiProblem(413, f"a JSON body may be at most {MAX_JSON_BODY} bytes", code="body_too_large")
                await problem.to_response(scope["path"])(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        try:
            document = json.loads(body) if body else None
        except (ValueError, RecursionError):
            document = None  # malformed JSON: the route's own validation answers it
        if (problem := _walk(document, "body")) is not None:
            await problem.to_response(scope["path"])(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()  # then e.g. http.disconnect

        await self.app(scope, replay, send)
