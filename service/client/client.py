"""`Client(url, key)`: the API's resources over one HTTP connection pool."""
from __future__ import annotations

from typing import Any

import httpx

from service.client.http import Http
from service.client.resources import Checkpoints, Datasets, Jobs, Pools, Rounds


class Client:
    """The Adapt-∞ API. Use as a context manager, or call close().

    Args:
        url: the API's base URL, e.g. http://127.0.0.1:8000.
        key: an API key (`adaptinf keys create`).
        timeout: seconds per request (uploads have none).
        retries: connection retries, and retries of 502/503/504 for requests safe to repeat.
        transport: the transport under the retry layer (a proxy's, or a test's MockTransport).
    """

    def __init__(self, url: str, key: str | None, *, timeout: float = 60.0, retries: int = 2,
                 backoff: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        self.http = Http(url, key, timeout=timeout, retries=retries, backoff=backoff, transport=transport)
        self.datasets = Datasets(self.http)
        self.pools = Pools(self.http)
        self.rounds = Rounds(self.http)
        self.jobs = Jobs(self.http)
        self.checkpoints = Checkpoints(self.http)

    @property
    def url(self) -> str:
        return self.http.url

    def request(self, method: str, path: str, *, idempotency_key: str | None = None, **kwargs: Any) -> httpx.Response:
        """Any route, raw: the response, or ApiError/ApiUnreachable (retried as the resources are)."""
        return self.http.request(method, path, idempotency_key=idempotency_key, **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
