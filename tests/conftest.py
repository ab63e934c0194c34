"""Shared fixtures: migrated databases (SQLite and the machine's PostgreSQL), settings, API clients.

`database_url` is parametrised over both databases, so every test that uses it runs twice.
PostgreSQL gets one fresh database per test session (`adaptinf_t_<random>`, created through the
`postgres` admin database, migrated with Alembic, dropped at the end) and is emptied between
tests; SQLite gets a copy of a migrated template file per test.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from apitools import Caller, make_caller  # tests/ is on sys.path
from pgtools import empty_pg_database
from s3tools import S3Endpoint, start_moto_server


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated with Alembic."""
    from service.cli.admin import upgrade_database

    with empty_pg_database() as url:
        upgrade_database(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that tests copy (a migration per test would be slower)."""
    from service.cli.admin import upgrade_database

    path = tmp_path_factory.mktemp("sqlite-template") / "adaptinf.db"
    upgrade_database(f"sqlite:///{path}")
    return path


def _empty_pg(url: str) -> None:
    from service.db.models import Base

    from service.db.session import get_engine

    # DELETE beats TRUNCATE on a handful of rows (TRUNCATE rewrites every table's files).
    with get_engine(url).begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database: SQLite, then the real PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "adaptinf.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_url")
    _empty_pg(url)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all (for migration tests): SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with empty_pg_database() as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path):  # noqa: ANN201
    from service.config import Settings

    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        broker_url="memory://",  # kombu's in-process broker: API tests need no worker
        max_upload_bytes=1024 * 1024,
    )


@pytest.fixture
def client(settings):  # noqa: ANN001, ANN201
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def alice(database_url: str) -> Caller:
    return make_caller(database_url, "alice")


@pytest.fixture
def bob(database_url: str) -> Caller:
    return make_caller(database_url, "bob")


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preset cache holding the real `smol-lm` (built once per session from the installed GGUF, ~30 s)."""
    from workers.engine.models.smol import build_smol_preset

    cache = tmp_path_factory.mktemp("presets")
    build_smol_preset("smol-lm", cache)
    return cache


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3 endpoint (moto's standalone server) shared by the session; tests make their own buckets."""
    yield from start_moto_server()
