"""FastAPI dependencies, as `Annotated` aliases routes put in their signatures."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from service.api.errors import ApiProblem, not_found
from service.auth import authenticate
from service.config import Settings
from service.db.locks import sqlite_write_lock
from service.db.models import Owner
from core.blobs import BlobStore


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request; routes commit explicitly, anything uncommitted is rolled back."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()  # close() rolls back an open transaction


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
SessionDep = Annotated[Session, Depends(get_session)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]

# auto_error=False: a missing header must become our problem+json 401, not FastAPI's own error.
_bearer = HTTPBearer(auto_error=False, description="An API key from `adaptinf keys create`.")


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(401, detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def get_current_owner(
    session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Owner:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    owner = authenticate(session, credentials.credentials)
    if owner is None:
        raise _unauthorized("invalid or revoked API key")
    return owner


OwnerDep = Annotated[Owner, Depends(get_current_owner)]


def get_owned_or_404(  # noqa: ANN201
    session: Session, model: type, id: str | int, owner_id: str, kind: str, *, for_update: bool = False
):
    """The row of `model` with this id if `owner_id` owns it; else the same 404 as a missing one.

    `for_update` locks the row for a read-modify-write such as a status change: FOR UPDATE on
    PostgreSQL; on SQLite, which ignores it, the database's write lock, taken before the read (or a
    write committed between the read and ours would be overwritten).
    """
    if for_update:
        sqlite_write_lock(session, model, id)
    row = session.get(model, id, with_for_update=for_update or None, populate_existing=for_update)
    if row is None or row.owner_id != owner_id:
        raise not_found(kind, str(id))
    return row
