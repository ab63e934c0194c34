"""Fresh PostgreSQL databases for tests (a module of its own so every conftest can import it)."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def pg_admin_engine():  # noqa: ANN202
    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=NullPool)


@contextmanager
def empty_pg_database(prefix: str = "adaptinf_t") -> Iterator[str]:
    """Create `<prefix>_<random>` (no tables) through the `postgres` admin database; drop it after."""
    from service.db.session import get_engine

    admin = pg_admin_engine()
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable ({type(exc).__name__}); CI starts it")
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_SERVER}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
