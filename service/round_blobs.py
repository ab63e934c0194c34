"""Typed references to the blobs a round's stages store (round_blobs), written by the stages in
the transaction that records their completion: from that commit on, the garbage collector keeps
the blob for as long as the round exists."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import ROUND_BLOB_KINDS, RoundBlob


def record_round_blobs(session: Session, round_id: str, **blobs: str | None) -> None:
    """Name each `kind=sha256` as the round's blob of that kind (None: the stage stored none).

    A kind already recorded is pointed at the new blob: a stage rewrites its output only when
    its earlier output was lost (an index rebuilt from the shards), and the old blob may go.
    """
    for kind, sha in blobs.items():
        if kind not in ROUND_BLOB_KINDS:
            raise ValueError(f"round blob kind must be one of {ROUND_BLOB_KINDS}, got {kind!r}")
        if sha is None:
            continue
        row = session.get(RoundBlob, (round_id, kind))
        if row is None:
            session.add(RoundBlob(round_id=round_id, kind=kind, blob=sha))
        else:
            row.blob = sha
    session.flush()


def round_blob(session: Session, round_id: str, kind: str) -> str | None:
    """The sha256 of the round's blob of `kind`, or None when its stage stored none."""
    return session.scalar(select(RoundBlob.blob).where(RoundBlob.round_id == round_id, RoundBlob.kind == kind))
