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

from core.text import json_leaves, text_problem
from service.api.errors import ApiProblem

MAX_JSON_BODY = 1 << 20  # non-upload bodies are configs and id lists; uploads are multipart


def _decoded(raw: bytes) -> str | None:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _walk(value: Any, where: str) -> ApiProblem | None:
    """The first key or value of a decoded JSON document that cannot be stored."""
    for at, leaf, is_key in json_leaves(value, where):
        if isinstance(leaf, str) and (problem := text_problem(leaf)) is not None:
            return ApiProblem(422, f"{at}: {'a key ' if is_key else ''}{problem}", code="invalid_text", field=at)
        if isinstance(leaf, float) and not math.isfinite(leaf):
            # Python's JSON reader takes NaN and Infinity, and reads 1e400 as infinity
            return ApiProblem(422, f"{at}: must be a finite number, got {leaf!r}", code="invalid_number", field=at)
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


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    problem = ApiProblem(413, f"a request body other than an upload may be at most {MAX_JSON_BODY} bytes",
                         code="body_too_large")
    await problem.to_response(scope["path"])(scope, receive, send)


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
        types = [v for k, v in scope.get("headers") or [] if k.lower() == b"content-type"]
        if len(types) > 1:  # which one a reader believes is a guess: refuse rather than be bypassed
            problem = ApiProblem(400, "the request has more than one Content-Type header", code="invalid_header")
            await problem.to_response(scope["path"])(scope, receive, send)
            return
        if types and types[0].split(b";")[0].strip().lower().startswith(b"multipart/"):
            await self.app(scope, receive, send)  # uploads stream; their text fields are checked by the route
            return
        # Any other body is read whatever its declared type, so a type spelled differently from
        # what the JSON check expects cannot slip text past it (only uploads are large).
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if declared.isdigit() and (len(declared) > 9 or int(declared) > MAX_JSON_BODY):  # no 5,000-digit int()
            await _too_large(scope, receive, send)
            return
        body, messages = bytearray(), []
        while True:
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            if len(body) > MAX_JSON_BODY:
                await _too_large(scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        try:
            document = json.loads(bytes(body)) if body else None
        except (ValueError, RecursionError):
            document = None  # malformed JSON: the route's own validation answers it
        try:
            problem = _walk(document, "body")
        except RecursionError:
            problem = ApiProblem(422, "body: JSON nested too deeply", code="invalid_json", field="body")
        if problem is not None:
            await problem.to_response(scope["path"])(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()  # then e.g. http.disconnect

        await self.app(scope, replay, send)
