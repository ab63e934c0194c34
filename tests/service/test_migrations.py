"""The Alembic migrations: upgrade, downgrade and re-upgrade on SQLite and PostgreSQL, and no
drift between the migrations and the ORM models."""
from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect
from sqlalchemy.pool import NullPool

from service.cli.admin import alembic_config, upgrade_database
from service.db.models import Base


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url):
    url = empty_database_url
    model_tables = set(Base.metadata.tables)
    upgrade_database(url)
    assert _tables(url) == model_tables | {"alembic_version"}
    command.downgrade(alembic_config(url), "base")
    assert _tables(url) == {"alembic_version"}
    upgrade_database(url)
    assert _tables(url) == model_tables | {"alembic_version"}


def test_migrations_match_the_models(database_url):
    """Autogenerate against the migrated database finds nothing to do: no model change lacks a migration."""
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diffs == []


def test_script_location_does_not_depend_on_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'sub' / 'x.db'}"
    upgrade_database(url)  # also creates the missing parent folder
    assert "jobs" in _tables(url)
