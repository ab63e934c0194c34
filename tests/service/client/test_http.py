"""The retry policy (httpx-retries over httpx's transport): 502/503/504 and broken reads are
retried for GET and for an idempotent POST only; a plain POST is sent once."""
from __future__ import annotations

import httpx
import pytest

from service.client import ApiError, Client


def _flaky(statuses: list[int], calls: list[httpx.Request]) -> httpx.MockTransport:
    """Answers `statuses` in order (then 200 forever), recording every request it got."""

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        status = statuses[len(calls) - 1] if len(calls) <= len(statuses) else 200
        if status == 200:
            return httpx.Response(200, json={"object": "list", "data": [], "has_more": False})
        return httpx.Response(status, json={"title": "Bad Gateway", "status": status, "detail": "upstream down"})

    return httpx.MockTransport(handle)


def _client(transport: httpx.MockTransport, retries: int = 2) -> Client:
    return Client("http://api.test", "ak_x", retries=retries, backoff=0, transport=transport)


def test_get_is_retried_on_502_503_504():
    calls: list[httpx.Request] = []
    with _client(_flaky([502, 503], calls)) as c:
        assert list(c.datasets.list()) == []
    assert len(calls) == 3


def test_retries_give_up_with_the_last_problem():
    calls: list[httpx.Request] = []
    with _client(_flaky([504, 504, 504, 504], calls)) as c, pytest.raises(ApiError) as exc:
        list(c.pools.list())
    assert len(calls) == 3 and exc.value.status == 504 and exc.value.problem.detail == "upstream down"


def test_a_plain_post_is_sent_once_and_an_idempotent_one_retried():
    calls: list[httpx.Request] = []
    with _client(_flaky([503], calls)) as c, pytest.raises(ApiError):
        c.jobs.cancel("job_x")  # no Idempotency-Key: a repeat could act twice
    assert len(calls) == 1

    calls.clear()
    with _client(_flaky([503], calls)) as c:
        c.request("POST", "/v1/pools", json={}, idempotency_key="k1")
    assert len(calls) == 2 and {r.headers["Idempotency-Key"] for r in calls} == {"k1"}


def test_a_4xx_is_not_retried_and_a_non_problem_body_is_named():
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, text="<html>Not Found</html>", headers={"content-type": "text/html"})

    with _client(httpx.MockTransport(handle)) as c, pytest.raises(ApiError) as exc:
        c.pools.get("pool_x")
    assert len(calls) == 1 and exc.value.code == "not_problem_json" and "Not Found" in str(exc.value)
    assert calls[0].headers["Authorization"] == "Bearer ak_x"
