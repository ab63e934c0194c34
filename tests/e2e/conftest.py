"""End-to-end fixtures: real `adaptinf worker` processes on the machine's Redis (DB 7, flushed
before and after) and a fresh PostgreSQL database (`adaptinf_e2e_<random>`, migrated, dropped)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_procs import ADAPTINF, REPO, WorkerProc, service_env
from pgtools import empty_pg_database

REDIS_URL = "redis://127.0.0.1:6379/7"  # a Redis DB number of its own, flushed around the session


def _redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable ({type(exc).__name__}); CI starts it")


@pytest.fixture(scope="session")
def e2e_redis_url() -> Iterator[str]:
    import redis

    _redis_or_skip()
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def e2e_pg_url() -> Iterator[str]:
    """A fresh migrated PostgreSQL database per test (workers and API share it)."""
    from service.cli.admin import upgrade_database

    with empty_pg_database("adaptinf_e2e") as url:
        upgrade_database(url)
        yield url


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """Start `adaptinf worker` processes for some settings; all are stopped at teardown."""
    started: list[WorkerProc] = []

    def start(settings, queues: str = "ingest,gpu,select,train") -> WorkerProc:  # noqa: ANN001
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(ADAPTINF), "worker", "--queues", queues, "--loglevel", "INFO"],
                cwd=REPO, env=service_env(settings), stdout=out, stderr=subprocess.STDOUT,
            )
        worker = WorkerProc(proc, log)
        started.append(worker)
        return worker

    yield start
    for worker in started:  # signal all first: a warm shutdown takes a few seconds each
        worker.terminate()
    for worker in started:
        worker.stop()
