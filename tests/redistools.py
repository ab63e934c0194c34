"""A Redis database of the machine's server for one test or module: flushed before and after."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


def flushed_redis(url: str) -> Iterator[str]:
    """Yield `url` with its database empty, and empty it again after; skip when Redis is down."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable ({type(exc).__name__}); CI starts it")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
