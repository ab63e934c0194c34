"""HTTP plumbing of the client: base URL, bearer key, retries, errors, cursor paging.

Retries, in two layers of maintained code:
- httpx's own `HTTPTransport(retries=N)` retries failed *connections* (nothing was sent, so it is
  safe for every method);
- httpx-retries' `RetryTransport` retries 502/503/504 answers and broken reads, only for GET and
  HEAD, and for a POST only when it carries an Idempotency-Key (the server then answers a repeat
  as it answered the first), by giving that one request a Retry that allows POST.
Timeouts are not retried: a 60 s read timeout repeated three times is four minutes of silence.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from httpx_retries import Retry, RetryTransport
from pydantic import BaseModel

from service.client.errors import ApiError, ApiUnreachable

M = TypeVar("M", bound=BaseModel)

RETRY_STATUSES = (502, 503, 504)
SAFE_METHODS = ("GET", "HEAD")
PAGE_SIZE = 100  # the API's largest page (service/api/pagination.py MAX_LIMIT)


def new_idempotency_key() -> str:
    return f"client-{uuid.uuid4()}"


class Http:
    """An httpx.Client with the key, the retry policy and errors raised as ApiError/ApiUnreachable."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.retry = Retry(total=retries, backoff_factor=backoff, allowed_methods=SAFE_METHODS,
                           status_forcelist=RETRY_STATUSES,
                           retry_on_exceptions=(httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError))
        self._post_retry = self.retry.copy_with(allowed_methods=(*SAFE_METHODS, "POST"))
        inner = transport or httpx.HTTPTransport(retries=retries)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                   transport=RetryTransport(transport=inner, retry=self.retry))

    def _build(self, method: str, path: str, idempotency_key: str | None, kwargs: dict[str, Any]) -> httpx.Request:
        if idempotency_key is not None:
            kwargs["headers"] = {**(kwargs.get("headers") or {}), "Idempotency-Key": idempotency_key}
            kwargs["extensions"] = {**(kwargs.get("extensions") or {}), "retry": self._post_retry}
        return self.client.build_request(method, path, **kwargs)

    def request(self, method: str, path: str, *, idempotency_key: str | None = None, **kwargs: Any) -> httpx.Response:
        """Send one request (retried where safe); a 4xx/5xx raises ApiError, no answer ApiUnreachable."""
        request = self._build(method, path, idempotency_key, kwargs)
        try:
            response = self.client.send(request)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.url, exc) from exc
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (status checked, body not yet read)."""
        request = self._build(method, path, None, kwargs)
        try:
            response = self.client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.url, exc) from exc
        try:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response)
            yield response
        except httpx.TransportError as exc:  # the connection broke mid-body
            raise ApiUnreachable(self.url, exc) from exc
        finally:
            response.close()

    def get(self, path: str, model: type[M], **params: Any) -> M:
        clean = {k: v for k, v in params.items() if v is not None}
        return model.model_validate(self.request("GET", path, params=clean).json())

    def send_json(self, method: str, path: str, body: Any, model: type[M], *, idempotent: bool = False) -> M:
        key = new_idempotency_key() if idempotent else None
        return model.model_validate(self.request(method, path, json=body, idempotency_key=key).json())

    def paged(self, path: str, model: type[M], *, after: str | int | None = None, **params: Any) -> Iterator[M]:
        """Every item of a `{data, has_more}` list, fetching pages as the caller iterates."""
        clean = {k: v for k, v in params.items() if v is not None}
        return _pages(lambda query: self.request("GET", path, params=clean | query).json(), model, after)

    def close(self) -> None:
        self.client.close()


def _pages(fetch: Callable[[dict[str, Any]], dict[str, Any]], model: type[M], after: str | int | None) -> Iterator[M]:
    while True:
        page = fetch({"limit": PAGE_SIZE} | ({"after": str(after)} if after is not None else {}))
        items = page["data"]
        yield from (model.model_validate(raw) for raw in items)
        if not page["has_more"] or not items:
            return
        after = items[-1]["id"]  # the cursor: the last item seen
