"""Alembic environment: one code path for PostgreSQL and SQLite (batch mode for SQLite's ALTERs)."""
from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import create_engine, pool

from service.db.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _database_url() -> str:
    """`-x url=...` wins, then a URL set on the Config by the caller, then the settings."""
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from service.config import Settings

    settings = Settings()
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    return settings.resolved_database_url


def _configure(connection=None, url: str | None = None) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates the table instead.
        render_as_batch=True,
        compare_type=True,
        literal_binds=connection is None,
        dialect_opts={"paramstyle": "named"} if connection is None else {},
    )


def run_migrations_offline() -> None:
    _configure(url=_database_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # a caller (tests, the CLI) handed us an open connection
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_database_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure(connection=conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
