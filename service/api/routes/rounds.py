"""Rounds: start one on a pool, list a pool's rounds, read one, download its selection."""
from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from service.api.deps import BlobsDep, OwnerDep, SessionDep, SettingsDep
from service.api.errors import ApiProblem, disk_full_is_507, not_found
from service.api.openapi import problem_responses
from service.api.idempotency import IdempotencyKeyDep, IdempotentCreate
from service.api.pagination import PageDep, paginate
from service.api.quotas import enforce_quota
from service.api.routes.pools import owned_pool, problem_from
from service.broker import enqueue_job
from service.db.models import Round
from service.downloads import MEDIA_TYPES, plan_tar, stream_json, stream_jsonl, stream_tar
from service.jobs import add_event, note_unsent
from service.pool_checks import check_round_datasets
from service.pool_config import RoundParams, parse_pool_config
from service.owner_quotas import check_new_round
from service.pool_limits import over_limits
from service.domain_errors import DomainError
from service.rounds import create_round, get_round, selection_ready
from service.schemas import ApiWarning, ListOut, RoundOut, RowWith, created_example
from service.integrity import BlobDamaged

router = APIRouter(tags=["rounds"])
_CREATE_ROUTE = "POST /v1/pools/{pool_id}/rounds"


class RoundCreatedOut(RoundOut):
    model_config = created_example(RoundOut, {
        "code": "dataset_already_in_pool",
        "message": "dataset ds_4f1c2e9a7b3d5f60a1b2c3d4 is already in pool pool_9c0d1e2f3a4b5c6d7e8f9a0b (1000 "
                   "member(s)): its samples are not added again and pruned ones stay pruned, so it brings this round "
                   "nothing new"})
    warnings: list[ApiWarning] = Field(description="what the round was started with but you may not have meant")


@router.post(
    "/v1/pools/{pool_id}/rounds", status_code=202, response_model=RoundCreatedOut, summary="Start a round",
    responses=problem_responses(404, 409, 429, notes={
        409: "Another round of the pool is queued or running, or the pool's stored config no longer fits.",
        429: "You have as many rounds queued or running, or jobs unfinished, as the server allows per owner.",
        422: "A field is invalid, a dataset is unknown, not ready or an evaluation set of the pool, "
             "or the method does not fit the pool.",
    }),
)
def create_round_route(
    pool_id: str,
    body: RoundParams,
    session: SessionDep,
    owner: OwnerDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> JSONResponse:
    """Start a round on new datasets (202): select, train, prune; one round at a time per pool."""
    idem = IdempotentCreate(session, owner.id, idempotency_key, _CREATE_ROUTE,
                            {"pool_id": pool_id, **body.model_dump(mode="json")}, model=Round)
    if (replay := idem.replay()) is not None:
        return replay
    # The pool row lock (PostgreSQL) makes the "no other round running" check and the insert atomic.
    pool = owned_pool(session, pool_id, owner.id, for_update=True)
    try:
        stored = parse_pool_config(pool.config).to_json()
    except ValidationError as exc:  # a config an earlier release accepted (e.g. proj_dim not a multiple of 4)
        raise ApiProblem(409, f"this pool's stored config no longer validates ({exc.errors()[0]['msg']}); "
                         "create a pool with a valid config", code="invalid_pool_config") from None
    if errors := over_limits(stored, settings, "pool.config", new=False):
        raise ApiProblem(409, f"this pool's {errors[0]['field']} {errors[0]['message']}: the operator's limits "
                         "changed after the pool was created; create a pool within them", code="limit_exceeded",
                         field=errors[0]["field"], errors=errors)
    enforce_quota(check_new_round, session, owner.id, settings)
    try:
        warnings = check_round_datasets(session, pool, body.dataset_ids)  # before the round names them
        with disk_full_is_507("the round's records, into the database"):
            rnd, job = create_round(session, pool, body, max_attempts=settings.max_attempts)
            for w in warnings:  # also in the job's events, where `adaptinf jobs watch` shows them
                add_event(session, job.id, w["message"], level="warning", data={"code": w["code"]})
            out = jsonable_encoder(RoundCreatedOut.model_validate(RowWith(rnd, job=job, warnings=warnings)))
            idem.remember(202, out)
            if (replay := idem.commit()) is not None:
                return replay  # a concurrent request with the same key committed first
    except DomainError as exc:
        raise problem_from(exc) from None
    except IntegrityError:
        # A concurrent request took this round number (SQLite has no row lock) or this key.
        session.rollback()
        if (replay := idem.replay()) is not None:
            return replay
        raise ApiProblem(
            409, f"another round of pool {pool_id} was started at the same time; one round at a time per pool",
            code="round_in_progress",
        ) from None
    # After the commit, never before: the worker must find the rows the message points at.
    if not enqueue_job(settings, job.id, "round", "select"):
        note_unsent(session, job.id)
    return JSONResponse(out, status_code=202, headers={"Location": f"/v1/rounds/{rnd.id}"})


@router.get("/v1/pools/{pool_id}/rounds", response_model=ListOut[RoundOut], responses=problem_responses(404))
def list_rounds(pool_id: str, session: SessionDep, owner: OwnerDep, page: PageDep) -> dict[str, Any]:
    """A pool's rounds in round order."""
    owned_pool(session, pool_id, owner.id)
    stmt = select(Round).where(Round.pool_id == pool_id).options(selectinload(Round.job))
    result = paginate(session, stmt, key=(Round.number, Round.id), id_column=Round.id, page=page)
    return result.to_dict(RoundOut.model_validate)


def _owned_round(session: Session, round_id: str, owner_id: str) -> Round:
    rnd = get_round(session, round_id, owner_id)
    if rnd is None:
        raise not_found("round", round_id)
    return rnd


@router.get("/v1/rounds/{round_id}", response_model=RoundOut, responses=problem_responses(404))
def read_round(round_id: str, session: SessionDep, owner: OwnerDep) -> RoundOut:
    """A round: status, params, result with per-cluster stats, and its job's stage and progress."""
    return RoundOut.model_validate(_owned_round(session, round_id, owner.id))


def _damaged_image(exc: BlobDamaged) -> ApiProblem:
    what = "is missing from the blob store" if exc.missing else "no longer matches its sha256"
    return ApiProblem(
        500, f"image blob {exc.sha256} of this selection {what}. Upload the dataset that holds the image "
             f"again (the same files): storing the same content replaces the damaged blob; then download again.",
        code=exc.code, blob=exc.sha256)


@router.get(
    "/v1/rounds/{round_id}/selection",
    response_class=StreamingResponse,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}, "description": "the selected samples"},
               **problem_responses(404, 409, 500, notes={409: "The round has not finished selection yet.",
                                                         500: "An image of the selection is missing from storage or no longer matches its sha256; the body names the blob and the way out."})},
)
def download_selection(
    round_id: str,
    request: Request,
    session: SessionDep,
    owner: OwnerDep,
    blobs: BlobsDep,
    settings: SettingsDep,
    format: Annotated[Literal["jsonl", "json", "tar"], Query(description="tar adds images/")] = "jsonl",  # noqa: A002
) -> StreamingResponse:
    """The selected samples (original record + provenance under "adaptinf"), streamed."""
    rnd = _owned_round(session, round_id, owner.id)
    if not selection_ready(session, rnd):
        raise ApiProblem(
            409, f"round {round_id} has not finished selection yet (status {rnd.status}); poll job {rnd.job_id}",
            code="selection_not_ready", round_status=rnd.status,
        )
    factory = request.app.state.sessionmaker
    headers = {"Content-Disposition": f'attachment; filename="{rnd.id}-selection.{format}"'}
    if format == "jsonl":
        body = stream_jsonl(factory, rnd)
    elif format == "json":
        body = stream_json(factory, rnd)
    else:
        try:
            plan = plan_tar(factory, rnd, blobs, settings.work_dir / "exports")
        except BlobDamaged as exc:
            raise _damaged_image(exc) from None
        headers["X-Selection-Count"] = str(plan.count)
        body = stream_tar(plan, blobs, time.time())
    return StreamingResponse(body, media_type=MEDIA_TYPES[format], headers=headers)
