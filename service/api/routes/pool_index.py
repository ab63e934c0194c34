"""A pool's FAISS index (pool config `pool_index`): download a version for your own searches,
checked against its sha256 first and rebuilt from the round's feature shards when damaged."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.orm import Session

from service.api.blob_response import BlobResponse, etag_for, etag_matches
from service.api.deps import BlobsDep, OwnerDep, SessionDep, SettingsDep
from service.api.errors import ApiProblem
from service.api.openapi import problem_responses
from service.api.routes.pools import owned_pool
from service.broker import enqueue_job
from service.config import Settings
from service.jobs import note_unsent
from service.pool_index import (
    REBUILD_KIND, REBUILD_QUEUE, Located, NoIndex, damage, find_version, is_unrecoverable, last_rebuild,
    request_rebuild,
)

router = APIRouter(prefix="/v1/pools", tags=["pools"])
MEDIA_TYPE = "application/octet-stream"
# A hint, not a promise: a rebuild reads every feature shard of the round once and builds the
# index. Measured on the shared 2-core dev machine: 20k rows × 8,192 dims in 4.7 s (0.9 s reading
# 79 shards, 3.9 s building and storing 295 MB), 20k × 1,024 in 2.3 s; a queued job also waits for
# a select worker. The client retries a 503 after this many seconds on its own (twice by default).
RETRY_AFTER_SECONDS = 10

_WHY_DAMAGED = {"missing": "is missing from the blob store", "corrupt": "no longer matches its sha256"}

_INDEX_HEADERS = {
    "ETag": {"description": "the file's sha256, quoted", "schema": {"type": "string"}},
    "X-Index-Version": {"description": "the index version's id", "schema": {"type": "string"}},
    "X-Index-Round": {"description": "the number of the round it belongs to", "schema": {"type": "integer"}},
    "X-Index-Rows": {"description": "vectors in the index (ntotal)", "schema": {"type": "integer"}},
    "X-Index-Dim": {"description": "vector width (the pool's features.proj_dim)", "schema": {"type": "integer"}},
    "X-Index-Kind": {"description": "flat (exact) or ivf (probes 16 lists)", "schema": {"type": "string"}},
}
_PROBLEMS = problem_responses(404, 416, 500, 503, 507, notes={
    404: "No such pool; or the pool keeps no index (`no_index`: its config has `pool_index` false, or no round "
         "of it has succeeded yet, or none has the `round` asked for).",
    500: "The index version's file is damaged and its rebuild failed because the round's feature shards are "
         "damaged too (`index_unrecoverable`); the body names the version and the failed job. The pool's next "
         "round stores a new version.",
    503: "The index version's file is missing or no longer matches its sha256 (`index_rebuilding`): it is not "
         "served, and a job rebuilds it from the round's feature shards. The body names the version and the job "
         "(`job_id`); retry after `Retry-After` seconds.",
    507: "The index version's file is damaged and its rebuild job could not be recorded: the server's disk is "
         "full; free space and retry."})
_PROBLEMS[503]["headers"] = {"Retry-After": {"description": "Seconds to wait before asking again.",
                                             "schema": {"type": "integer", "minimum": 1}}}
_RESPONSES = {
    200: {"content": {MEDIA_TYPE: {}}, "headers": _INDEX_HEADERS,
          "description": "the FAISS index file (faiss.read_index reads it)"},
    206: {"content": {MEDIA_TYPE: {}, "multipart/byteranges": {}}, "headers": _INDEX_HEADERS,
          "description": "the requested byte range (several ranges: multipart/byteranges)"},
    304: {"description": "If-None-Match matched the ETag"},
    **_PROBLEMS,
}


def _headers(found: Located) -> dict[str, str]:
    v = found.version
    headers = {"ETag": etag_for(v.sha256), "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache",
               "X-Index-Version": v.id, "X-Index-Round": str(found.round_number), "X-Index-Rows": str(v.ntotal),
               "X-Index-Kind": v.kind}
    if v.dim is not None:
        headers["X-Index-Dim"] = str(v.dim)
    return headers


def _unavailable(session: Session, settings: Settings, found: Located, why: str, owner_id: str) -> ApiProblem:
    """The problem for a damaged version: 500 when its source is damaged too, else 503 with its rebuild job."""
    v = found.version
    what = f"the file of index version {v.id} (round {found.round_number} of pool {v.pool_id}, blob {v.blob})"
    failed = last_rebuild(session, v)
    if is_unrecoverable(failed):
        return ApiProblem(
            500, f"{what} {_WHY_DAMAGED[why]}, and rebuilding it from the round's feature shards failed: "
                 f"{(failed.error or {}).get('message', 'its source is damaged')} (job {failed.id}). The pool's next "
                 f"round stores a new index version.",
            code="index_unrecoverable", index_version_id=v.id, round_number=found.round_number, blob=v.blob,
            job_id=failed.id)
    job, created = request_rebuild(session, v, owner_id, max_attempts=settings.max_attempts)
    session.commit()
    if created and not enqueue_job(settings, job.id, REBUILD_KIND, REBUILD_QUEUE):
        note_unsent(session, job.id)
    return ApiProblem(
        503, f"{what} {_WHY_DAMAGED[why]}, so it is not served; job {job.id} is rebuilding it from the round's "
             f"feature shards (GET /v1/jobs/{job.id}). Retry in {RETRY_AFTER_SECONDS} s.",
        code="index_rebuilding", headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        index_version_id=v.id, round_number=found.round_number, blob=v.blob, job_id=job.id)


@router.head(
    "/{pool_id}/index",
    operation_id="head_pool_index",
    summary="Head pool index",
    description="GET's status and headers (size, ETag, the index's shape) without the body.",
    response_class=BlobResponse,
    responses=_RESPONSES,
)
@router.get("/{pool_id}/index", response_class=BlobResponse, responses=_RESPONSES)
def download_pool_index(
    pool_id: str,
    session: SessionDep,
    owner: OwnerDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    round_number: Annotated[int | None, Query(alias="round", ge=1, le=1_000_000_000,
                                              description="the round's number (default: the latest)")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    # Declared so the OpenAPI lists them; BlobResponse reads them off the request itself.
    range_header: Annotated[str | None, Header(alias="Range", description="bytes=a-b, a- or -n")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", description="the ETag of a partial copy")] = None,
) -> Response:
    """The pool's FAISS index (the latest round's, or `?round=N`): cosine search over its samples,
    FAISS ids = sample ids. `Range` resumes; the ETag is the sha256. The file is checked against its
    sha256 first; a damaged one is not served (503, and a job rebuilds it from the round's shards)."""
    pool = owned_pool(session, pool_id, owner.id)
    try:
        found = find_version(session, pool, round_number)
    except NoIndex as exc:
        raise ApiProblem(404, exc.detail, code=exc.code) from None
    headers = _headers(found)
    if etag_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    why = damage(blobs, found.version)
    if why is None:
        try:
            path = blobs.materialize(found.version.blob)
            stat = path.stat()
        except FileNotFoundError:  # deleted since the check (BlobNotFound is one too)
            why = "missing"
    if why is not None:
        raise _unavailable(session, settings, found, why, owner.id)
    # Range, If-Range and HEAD are answered by the response itself (see service/api/blob_response.py).
    return BlobResponse(path, media_type=MEDIA_TYPE, headers=headers, stat_result=stat,
                        filename=f"{pool_id}-round{found.round_number}.faiss")

