"""A bounded wait for each part of a request body: a 408 and a closed connection past it.

uvicorn (h11 and httptools alike) has no body read timeout: a client that sends fewer bytes than
its Content-Length leaves the request waiting in `receive()` until the client goes, which held a
connection open for as long as the client liked (over 20 s was seen, with no end). This wraps
`receive()` in `asyncio.wait_for` while the body is still arriving, measured between two parts
(as nginx's client_body_timeout), so a slow but live upload is not cut. Once the body is complete,
`receive()` is left alone: a streamed download waits on it for the client's disconnect.
"""
from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiProblem


class BodyReadTimeout(HTTPException):
    """No part of the body came within the timeout. An HTTPException so that FastAPI's body
    parsing passes it on instead of calling it a malformed body (400)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(408, f"no part of the request body arrived within {seconds:g} s (it is shorter than its "
                         "Content-Length, or the client stalled); the connection is closed: send the request again")


def _response(exc: BodyReadTimeout, path: str) -> JSONResponse:
    # Connection: close: the rest of the body may still come, and could not be told from a next request.
    return ApiProblem(408, exc.detail, code="body_read_timeout", headers={"Connection": "close"}).to_response(path)


class BodyTimeout:
    """ASGI middleware; `install_body_timeout` adds it with the handler for errors inside routes."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        started = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.seconds)
            except TimeoutError:
                raise BodyReadTimeout(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, timed_receive, watched_send)
        except BodyReadTimeout as exc:  # raised outside the routes (e.g. TextGuard reading a JSON body)
            if started:
                raise
            await _response(exc, scope["path"])(scope, receive, send)


async def _on_body_timeout(request: Request, exc: BodyReadTimeout) -> JSONResponse:
    return _response(exc, request.url.path)


def install_body_timeout(app: FastAPI, seconds: float) -> None:
    """Add the middleware (call it after the other middleware: it must wrap them all)."""
    app.add_exception_handler(BodyReadTimeout, _on_body_timeout)
    app.add_middleware(BodyTimeout, seconds=seconds)
