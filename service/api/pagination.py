"""Cursor pagination: `?limit=1..100` (default 20) and `?after=<id>`; answers `{data, has_more}`.

Rows are ordered by a key of columns ending in the unique id (e.g. created_at, id), so the order
is total and stable; `after` names the last item of the previous page and the next page starts
strictly after its key. Keyset pagination stays correct while rows are being added.

Why not a library: sqlakeyset (and fastapi-pagination's cursor pages, built on it) page by
opaque bookmarks that serialise the key values, and answer `paging.has_next` plus bookmarks, not
`after=<id>`. The id cursor is this API's contract (the CLI and the client send the last id they
saw, as Stripe's and OpenAI's lists do), so an adopter would still look the id up and convert it
to key values, then hand sqlakeyset only the `key > values` filter and the limit+1 probe below:
about ten lines, for a new dependency. Not simpler, so not adopted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from service.api.errors import ApiProblem

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


@dataclass(frozen=True)
class PageParams:
    limit: int
    after: str | None


def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")] = DEFAULT_LIMIT,
    after: Annotated[str | None, Query(max_length=100, description="Id of the last item seen.")] = None,
) -> PageParams:
    return PageParams(limit=limit, after=after)


PageDep = Annotated[PageParams, Depends(page_params)]


@dataclass
class Page:
    items: list[Any]
    has_more: bool

    def to_dict(self, serialize) -> dict[str, Any]:  # noqa: ANN001
        return {"object": "list", "data": [serialize(x) for x in self.items], "has_more": self.has_more}


def _after(key: Sequence[ColumnElement], values: Sequence[Any]) -> ColumnElement[bool]:
    """Row-value comparison `key > values`, spelt out because SQLite and PostgreSQL differ on tuples."""
    col, value = key[0], values[0]
    if len(key) == 1:
        return col > value
    return or_(col > value, and_(col == value, _after(key[1:], values[1:])))


def paginate(
    session: Session,
    stmt: Select,
    *,
    key: Sequence[ColumnElement],
    id_column: ColumnElement,
    page: PageParams,
    id_type: type = str,
) -> Page:
    """One page of `stmt` (a select of one ORM entity, already filtered to what the caller may see).

    Args:
        key: the ordering columns, the last being unique (e.g. `(Job.created_at, Job.id)`).
        id_column: the column `after` refers to.
        id_type: how to read `after` (int for integer ids).
    """
    if page.after is not None:
        try:
            cursor_id = id_type(page.after)
        except ValueError:
            raise ApiProblem(400, f"after: {page.after!r} is not a valid id", code="invalid_cursor") from None
        if id_type is int and not -(2**63) <= cursor_id < 2**63:  # a BIGINT column: larger is no id (and a DB error)
            raise ApiProblem(400, f"after: {page.after!r} is not a valid id", code="invalid_cursor")
        # The cursor lookup reuses the caller's filters, so an id outside the list is not a cursor.
        values = session.execute(stmt.with_only_columns(*key).where(id_column == cursor_id)).first()
        if values is None:
            raise ApiProblem(400, f"after: no item with id {page.after!r} in this list", code="invalid_cursor")
        stmt = stmt.where(_after(key, tuple(values)))
    rows = list(session.scalars(stmt.order_by(*key).limit(page.limit + 1)))
    return Page(items=rows[: page.limit], has_more=len(rows) > page.limit)
