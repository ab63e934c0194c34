"""Checkpoints: list, read, and download the PEFT adapter (tar.gz) with Range and ETag."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.blob_response import BlobResponse, etag_for, etag_matches
from service.api.deps import BlobsDep, OwnerDep, SessionDep, SettingsDep
from service.api.errors import ApiProblem, not_found
from service.api.openapi import problem_responses
from service.api.pagination import PageDep, paginate
from service.api.routes.pools import owned_pool
from service.db.models import Checkpoint, Pool
from service.checkpoints import get_checkpoint, with_round_and_evals
from service.integrity import BlobDamaged, ensure_checkpoint_blob
from service.schemas import CheckpointOut, ListOut

router = APIRouter(prefix="/v1/checkpoints", tags=["checkpoints"])
MEDIA_TYPE = "application/gzip"


def _owned_checkpoint(session: Session, checkpoint_id: str, owner_id: str) -> Checkpoint:
    ckpt = get_checkpoint(session, checkpoint_id, owner_id)
    if ckpt is None:
        raise not_found("checkpoint", checkpoint_id)
    return ckpt


# exclude_unset: a member the stored metrics lack stays absent rather than shown as its default
@router.get("", response_model=ListOut[CheckpointOut], response_model_exclude_unset=True, responses=problem_responses(
    notes={404: "`pool_id` names no pool of yours."}))
def list_checkpoints(
    session: SessionDep,
    owner: OwnerDep,
    page: PageDep,
    pool_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    """Your checkpoints (of one pool with `pool_id`), oldest first."""
    stmt = with_round_and_evals(select(Checkpoint).join(Pool, Pool.id == Checkpoint.pool_id)).where(
        Pool.owner_id == owner.id)
    if pool_id is not None:
        owned_pool(session, pool_id, owner.id)
        stmt = stmt.where(Checkpoint.pool_id == pool_id)
    result = paginate(session, stmt, key=(Checkpoint.created_at, Checkpoint.id), id_column=Checkpoint.id, page=page)
    return result.to_dict(CheckpointOut.model_validate)


@router.get("/{checkpoint_id}", response_model=CheckpointOut, response_model_exclude_unset=True,
            responses=problem_responses(404))
def read_checkpoint(checkpoint_id: str, session: SessionDep, owner: OwnerDep) -> CheckpointOut:
    """A checkpoint: pool, round, kind, size, sha256, training metrics, evaluation results."""
    return CheckpointOut.model_validate(_owned_checkpoint(session, checkpoint_id, owner.id))


_CONTENT_PROBLEMS = problem_responses(404, 416, 500, 507, notes={
    500: "The checkpoint's file is missing from storage (`blob_missing`) or no longer matches its sha256 "
         "(`blob_corrupt`), and no intact copy could restore it; the body names the blob and the way out.",
    507: "The checkpoint's file was damaged and is being restored from the worker's copy, but the server's "
         "disk is full; free space and retry."})


def _damaged(ckpt: Checkpoint, exc: BlobDamaged) -> ApiProblem:
    what = "is missing from the blob store" if exc.missing else "no longer matches its sha256"
    return ApiProblem(
        500, f"the content of checkpoint {ckpt.id} (blob {ckpt.blob}) {what}, and no intact copy is left to "
             f"restore it from (the workers' adapter cache holds none). The pool's next round continues from "
             f"its newest intact checkpoint; its checkpoints are listed at /v1/checkpoints?pool_id={ckpt.pool_id}.",
        code=exc.code, checkpoint_id=ckpt.id, blob=ckpt.blob, pool_id=ckpt.pool_id)


# HEAD sends GET's headers, Content-Type included, so both document the same media types; several
# ranges in one Range header come back as one multipart/byteranges body (FileResponse does that).
_CONTENT_RESPONSES = {
    200: {"content": {MEDIA_TYPE: {}}, "description": "the whole tar.gz"},
    206: {"content": {MEDIA_TYPE: {}, "multipart/byteranges": {}},
          "description": "the requested byte range (several ranges: multipart/byteranges)"},
    304: {"description": "If-None-Match matched the ETag"},
    **_CONTENT_PROBLEMS,
}


@router.head(
    "/{checkpoint_id}/content",
    operation_id="head_checkpoint_content",
    summary="Head checkpoint content",
    description="GET's status and headers (Content-Length, ETag, Content-Range) without the body.",
    response_class=BlobResponse,
    responses=_CONTENT_RESPONSES,
)
@router.get("/{checkpoint_id}/content", response_class=BlobResponse, responses=_CONTENT_RESPONSES)
def download_checkpoint(
    checkpoint_id: str,
    session: SessionDep,
    owner: OwnerDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    # Declared so the OpenAPI lists them; BlobResponse reads them off the request itself.
    range_header: Annotated[str | None, Header(alias="Range", description="bytes=a-b, a- or -n")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", description="the ETag of a partial copy")] = None,
) -> Response:
    """The adapter as tar.gz; `Range: bytes=a-b | a- | -n` resumes, the ETag is the sha256.
    HEAD answers the same status and headers (size, ETag, range) with no body. The file is
    checked against its sha256 first; a damaged one is restored from the workers' adapter cache
    or answered with a 500 naming the blob."""
    ckpt = _owned_checkpoint(session, checkpoint_id, owner.id)
    etag = etag_for(ckpt.blob)
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"}
    if etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    # Never serve bytes that fail their own ETag: checked first (hashed once per version of the
    # file, core/verified.py), and re-published from the adapter cache when damaged.
    try:
        ensure_checkpoint_blob(blobs, settings.work_dir, ckpt.blob)
    except BlobDamaged as exc:
        raise _damaged(ckpt, exc) from None
    path = blobs.materialize(ckpt.blob)
    try:
        stat = path.stat()
    except FileNotFoundError:  # deleted between the check and here
        raise _damaged(ckpt, BlobDamaged(ckpt.blob, missing=True)) from None
    # Range, If-Range and HEAD are answered by the response itself (see service/api/blob_response.py).
    return BlobResponse(path, media_type=MEDIA_TYPE, headers=headers, filename=f"{checkpoint_id}.tar.gz",
                        stat_result=stat)
