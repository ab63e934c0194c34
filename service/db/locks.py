"""Row locks that hold on SQLite too: the check a caller makes under one and the writes it allows
are serialised against every other caller taking it."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session


def sqlite_write_lock(session: Session, model: Any, row_id: str) -> bool:
    """On SQLite, take the database's one write lock until commit, and return True.

    SQLite ignores FOR UPDATE, and pysqlite opens a transaction only at the first write: a no-op
    write to the row does both (waiting for the lock up to the busy timeout). Elsewhere, False."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    session.execute(update(model).where(model.id == row_id).values(id=model.id)
                    .execution_options(synchronize_session=False))
    return True


def lock_row(session: Session, model: Any, row_id: str) -> None:
    """Hold the row until the transaction ends: FOR NO KEY UPDATE on PostgreSQL (rows referring to
    it can still be inserted meanwhile), the write lock on SQLite."""
    if not sqlite_write_lock(session, model, row_id):
        session.execute(select(model.id).where(model.id == row_id).with_for_update(key_share=True))
