"""Bulk inserts: COPY on PostgreSQL, executemany elsewhere.

A dataset of 200k samples or a first round's 200k pool members are written in one transaction;
on PostgreSQL, `COPY … FROM STDIN` streams them in one statement instead of batches of INSERTs.
The rows go through the session's own connection, so they commit (or roll back) with the rest of
its transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, insert
from sqlalchemy.orm import Session


def bulk_insert(session: Session, model: type, rows: Sequence[dict[str, Any]]) -> int:
    """Insert `rows` (dicts with the same keys: column names) into `model`'s table; returns the count.

    Column defaults set in Python are not applied on the COPY path: every row names every column
    it needs except database-generated ones (an autoincrement id)."""
    if not rows:
        return 0
    session.flush()  # pending ORM rows (a parent the new rows refer to) go first, as autoflush would
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        session.execute(insert(model), rows)
        return len(rows)
    from psycopg import sql
    from psycopg.types.json import Json

    table = model.__table__
    columns = list(rows[0])
    # as SQLAlchemy's JSON type writes them: None is JSON null unless the column says none_as_null
    as_json = [isinstance(table.c[c].type, JSON) and not table.c[c].type.none_as_null for c in columns]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(sql.Identifier(table.name),
                                                     sql.SQL(", ").join(map(sql.Identifier, columns)))
    with conn.connection.driver_connection.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row([Json(row[c]) if j else row[c] for c, j in zip(columns, as_json)])
    return len(rows)
