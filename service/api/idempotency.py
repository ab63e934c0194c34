"""`Idempotency-Key` on creating POSTs: a retried request gets the first response back.

Same key + same request → the stored response, same status. Same key + a different request →
422. A key whose resource has since been deleted is forgotten: the request creates anew, rather
than answer with a resource that no longer exists. Keys are scoped per owner. The record is written in the same transaction as the resource it
describes, so either both exist or neither; a concurrent duplicate loses on the primary key and
then replays the winner's response. A creating route uses `IdempotentCreate` for all of it.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api.errors import ApiProblem
from service.db.models import IdempotencyRecord

IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string; repeating it repeats the first response instead of creating again.",
    ),
]


def request_fingerprint(route: str, payload: Any) -> str:
    """sha256 of the route and a canonical JSON form of what defines the request."""
    canonical = json.dumps([route, jsonable_encoder(payload)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def replay_or_none(session: Session, owner_id: str, key: str | None, route: str, fingerprint: str,
                   model: type | None = None) -> JSONResponse | None:
    """The stored response for this key, None when the key is new; 422 when it was used differently.
    With `model`, a stored response whose resource (its body's `id`) was deleted since is forgotten."""
    if key is None:
        return None
    record = session.get(IdempotencyRecord, (owner_id, key))
    if record is None:
        return None
    created = record.body.get("id") if isinstance(record.body, dict) else None
    if (model is not None and created is not None and record.route == route
            and record.request_hash == fingerprint and session.get(model, created) is None):
        session.delete(record)
        session.flush()
        return None
    if record.route != route or record.request_hash != fingerprint:
        raise ApiProblem(
            422,
            f"Idempotency-Key {key!r} was already used for a different request; use a new key",
            code="idempotency_key_reused",
        )
    return JSONResponse(record.body, status_code=record.status_code, headers={"Idempotent-Replayed": "true"})


def remember_response(
    session: Session, owner_id: str, key: str | None, route: str, fingerprint: str, status_code: int, body: Any
) -> None:
    """Add the record to the session; the caller commits it with the created resource."""
    if key is None:
        return
    session.add(
        IdempotencyRecord(
            owner_id=owner_id,
            key=key,
            route=route,
            request_hash=fingerprint,
            status_code=status_code,
            body=jsonable_encoder(body),
        )
    )


class IdempotentCreate:
    """One creating request under an optional Idempotency-Key: `replay()` first, `remember()` the
    response with the new rows, then `commit()`."""

    def __init__(self, session: Session, owner_id: str, key: str | None, route: str, payload: Any,
                 model: type | None = None) -> None:
        self.session, self.owner_id, self.key, self.route = session, owner_id, key, route
        self.fingerprint = request_fingerprint(route, payload)
        self.model = model  # the created resource's table: a replay of a deleted one is forgotten

    def replay(self) -> JSONResponse | None:
        """The stored response of this key, None when the key is new (or absent, or its resource
        was deleted since); 422 when reused."""
        return replay_or_none(self.session, self.owner_id, self.key, self.route, self.fingerprint, self.model)

    def remember(self, status_code: int, body: Any) -> None:
        remember_response(self.session, self.owner_id, self.key, self.route, self.fingerprint, status_code, body)

    def commit(self) -> JSONResponse | None:
        """Commit the resource with its record; None once committed. When a concurrent twin with the
        same key committed first, the commit fails on the record's key: roll back and return the
        twin's response. Any other IntegrityError is raised, after the rollback."""
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            if (replay := self.replay()) is None:
                raise
            return replay
        return None
