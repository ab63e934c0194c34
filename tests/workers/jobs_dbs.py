"""Throw-away databases for the job-layer tests: a migrated SQLite file or a fresh PostgreSQL DB.

Migrating costs about a second, so a session migrates one template per backend and each test gets
a copy (a file copy for SQLite, ``CREATE DATABASE ... TEMPLATE`` for PostgreSQL).
"""
from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _pg_url(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _pg_admin(sql: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


@contextmanager
def migrated_template(backend: str, tmp_dir: Path) -> Iterator[str]:
    """A migrated database to copy from: a SQLite path or a PostgreSQL database name."""
    from service.cli.admin import upgrade_database
    from service.db.session import get_engine

    if backend == "sqlite":
        path = tmp_dir / "template.db"
        url = f"sqlite:///{path}"
        upgrade_database(url)
        get_engine(url).dispose()
        yield str(path)
        return
    name = f"adaptinf_tmpl_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        upgrade_database(_pg_url(name))
        get_engine(_pg_url(name)).dispose()
        yield name
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_from(backend: str, template: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a fresh copy of `template`; drop it afterwards."""
    from service.db.session import get_engine

    if backend == "sqlite":
        path = tmp_path / "jobs.db"
        shutil.copyfile(template, path)
        url = f"sqlite:///{path}"
        try:
            yield url
        finally:
            get_engine(url).dispose()
        return
    name = f"adaptinf_jobs_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = _pg_url(name)
    try:
        yield url
    finally:
        get_engine(url).dispose()
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
