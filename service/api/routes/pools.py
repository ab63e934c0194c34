"""Pools: create, list, read, delete, evaluation sets, removing a dataset, latest clusters, lifelong metrics."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.api.deps import OwnerDep, SessionDep, SettingsDep
from service.api.errors import ApiProblem, not_found
from service.api.openapi import problem_responses
from service.api.idempotency import IdempotencyKeyDep, IdempotentCreate
from service.api.pagination import PageDep, paginate
from service.base_models import resolve_base_model
from service.db.models import Pool
from service.pool_config import PoolConfig
from service.pool_checks import check_eval_set
from service.pool_limits import over_limits
from service.pool_removal import NotInPool, delete_pool, remove_dataset
from service.domain_errors import Conflict, DomainError
from service.pools import add_eval_set, create_pool, get_pool, latest_clusters, pool_counts
from service.pool_metrics import pool_metrics
from service.schemas import ApiWarning, ClustersOut, ListOut, PoolMetricsOut, PoolOut, RowWith, SkillName, created_example

router = APIRouter(prefix="/v1/pools", tags=["pools"])
_CREATE_ROUTE = "POST /v1/pools"


class EvalSetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"dataset_id": "ds_7e8f9a0b1c2d3e4f5a6b7c8d", "skill": "counting"}]})
    dataset_id: str = Field(min_length=1, max_length=40)
    skill: SkillName = Field(description="the skill this held-out set measures (stripped)")


class PoolCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "vqa-lifelong", "base_model": "tiny-llava", "model_type": "llava",
        "config": {"selection": {"n_clusters": 8}, "training": {"epochs": 2, "lr": 0.0001}},
        "eval_sets": [{"dataset_id": "ds_7e8f9a0b1c2d3e4f5a6b7c8d", "skill": "counting"}],
    }]})
    name: str = Field(min_length=1, max_length=200)
    base_model: str = Field(min_length=1, max_length=500, description=(
        "a preset (tiny-llava, ...), a Hugging Face id org/name (cached, or with downloads allowed), "
        "or a directory under ADAPTINF_MODELS_ROOT"))
    model_type: Literal["llava", "causal-lm"]
    config: PoolConfig | None = Field(None, description="partial config; missing keys get their defaults")
    eval_sets: list[EvalSetIn] = Field(default_factory=list, max_length=100)

    @field_validator("eval_sets")
    @classmethod
    def _distinct(cls, v: list[EvalSetIn]) -> list[EvalSetIn]:
        ids = [e.dataset_id for e in v]
        if dup := next((d for d in ids if ids.count(d) > 1), None):
            raise ValueError(f"dataset {dup!r} is listed twice")
        return v

    @model_validator(mode="after")
    def _projector_needs_llava(self) -> "PoolCreate":
        if self.config is not None and self.config.lora.train_projector and self.model_type != "llava":
            raise ValueError("config.lora.train_projector needs model_type 'llava' (a causal-lm has no projector)")
        return self


class PoolCreatedOut(PoolOut):
    model_config = created_example(PoolOut, {
        "code": "images_dropped",
        "message": "dataset ds_4f1c2e9a7b3d5f60a1b2c3d4 has 1000 image(s); pool pool_9c0d1e2f3a4b5c6d7e8f9a0b is "
                   "causal-lm, which reads text only: its images and their <image> tokens are dropped (use a llava "
                   "pool to train on them)"})
    warnings: list[ApiWarning] = Field(description="what the pool was created with but you may not have meant")


def problem_from(exc: DomainError) -> ApiProblem:
    """422 for a bad reference (with the field), 409 for a state conflict."""
    if isinstance(exc, Conflict):
        return ApiProblem(409, exc.detail, code=exc.code)
    errors = [{"field": exc.field, "message": exc.detail, "type": exc.code}] if exc.field else []
    return ApiProblem(422, exc.detail, code=exc.code, field=exc.field, errors=errors)


def owned_pool(session: Session, pool_id: str, owner_id: str, *, for_update: bool = False) -> Pool:
    pool = get_pool(session, pool_id, owner_id, for_update=for_update)
    if pool is None:
        raise not_found("pool", pool_id)
    return pool


def pool_out(session: Session, pool: Pool, model: type[PoolOut] = PoolOut, **extra: Any) -> PoolOut:
    return model.model_validate(RowWith(pool, **pool_counts(session, [pool.id])[pool.id], **extra))


@router.post("", status_code=201, response_model=PoolCreatedOut, summary="Create a pool", responses=problem_responses(
    notes={422: "A field is invalid, the base model is not available, or the config exceeds the operator's limits."}))
def create_pool_route(
    body: PoolCreate, session: SessionDep, owner: OwnerDep, settings: SettingsDep,
    idempotency_key: IdempotencyKeyDep = None,
) -> JSONResponse:
    """Create a lifelong pool: base model, model type, config (defaults filled), evaluation sets."""
    config = body.config or PoolConfig()
    idem = IdempotentCreate(session, owner.id, idempotency_key, _CREATE_ROUTE,
                            body.model_dump(mode="json") | {"config": config.to_json()}, model=Pool)
    if (replay := idem.replay()) is not None:
        return replay
    if errors := over_limits(config.to_json(), settings):
        raise ApiProblem(422, f"{errors[0]['field']}: {errors[0]['message']}", code="limit_exceeded",
                         field=errors[0]["field"], errors=errors)
    base_model, problem = resolve_base_model(body.base_model, body.model_type, settings)
    if problem is not None:
        raise ApiProblem(422, f"body.base_model: {problem}", code="unknown_base_model", field="body.base_model",
                         errors=[{"field": "body.base_model", "message": problem, "type": "unknown_base_model"}])
    try:
        pool = create_pool(
            session, owner.id, name=body.name, base_model=base_model, model_type=body.model_type,
            config=config, eval_sets=[(e.dataset_id, e.skill) for e in body.eval_sets],
        )
        warnings = [w for i, e in enumerate(body.eval_sets)
                    for w in check_eval_set(session, pool, e.dataset_id, f"body.eval_sets[{i}].dataset_id")]
    except DomainError as exc:
        raise problem_from(exc) from None
    out = jsonable_encoder(pool_out(session, pool, PoolCreatedOut, warnings=warnings))
    idem.remember(201, out)
    if (replay := idem.commit()) is not None:
        return replay  # a concurrent twin with the same Idempotency-Key won
    return JSONResponse(out, status_code=201, headers={"Location": f"/v1/pools/{pool.id}"})


@router.get("", response_model=ListOut[PoolOut])
def list_pools(session: SessionDep, owner: OwnerDep, page: PageDep) -> dict[str, Any]:
    """List your pools, oldest first."""
    stmt = select(Pool).where(Pool.owner_id == owner.id)
    result = paginate(session, stmt, key=(Pool.created_at, Pool.id), id_column=Pool.id, page=page)
    counts = pool_counts(session, [p.id for p in result.items])
    return result.to_dict(lambda p: PoolOut.model_validate(RowWith(p, **counts[p.id])))


@router.get("/{pool_id}", response_model=PoolOut, responses=problem_responses(404))
def read_pool(pool_id: str, session: SessionDep, owner: OwnerDep) -> PoolOut:
    """A pool: config, size, active/pruned per dataset, rounds completed, current checkpoint."""
    return pool_out(session, owned_pool(session, pool_id, owner.id))


@router.post("/{pool_id}/eval-sets", status_code=201, response_model=PoolCreatedOut, responses=problem_responses(
    404, 409, notes={409: "The dataset is already an evaluation set of this pool.",
                     422: "The dataset is unknown or not ready, or the pool trains on it."}))
def add_eval_set_route(pool_id: str, body: EvalSetIn, session: SessionDep, owner: OwnerDep) -> JSONResponse:
    """Add a held-out dataset, tagged with a skill, that every later checkpoint is scored on."""
    pool = owned_pool(session, pool_id, owner.id, for_update=True)  # against a round naming it meanwhile
    try:
        warnings = check_eval_set(session, pool, body.dataset_id, "body.dataset_id")
        add_eval_set(session, pool, body.dataset_id, body.skill)
        session.commit()
    except DomainError as exc:
        raise problem_from(exc) from None
    except IntegrityError:  # the same dataset added concurrently
        session.rollback()
        raise ApiProblem(409, f"dataset {body.dataset_id!r} is already an evaluation set of pool {pool_id}",
                         code="eval_set_exists") from None
    return JSONResponse(jsonable_encoder(pool_out(session, pool, PoolCreatedOut, warnings=warnings)), status_code=201)


# exclude_unset: a member an earlier release did not store stays absent rather than shown as its default
@router.get("/{pool_id}/clusters", response_model=ClustersOut, response_model_exclude_unset=True,
            responses=problem_responses(404))
def read_clusters(pool_id: str, session: SessionDep, owner: OwnerDep) -> dict[str, Any]:
    """The pseudo-skill clusters of the latest succeeded round: size, expert, budget, selected, pruned."""
    return latest_clusters(session, owned_pool(session, pool_id, owner.id))


@router.get("/{pool_id}/metrics", response_model=PoolMetricsOut, responses=problem_responses(
    404, notes={422: "`reference_pool_id` names no pool of yours."}))
def read_metrics(
    pool_id: str,
    session: SessionDep,
    owner: OwnerDep,
    reference_pool_id: Annotated[str | None, Query(max_length=40, description="pool for relative gain")] = None,
) -> dict[str, Any]:
    """Lifelong metrics: accuracy per round and skill, each skill's arrival, forgetting, transfer, MCITlib's MFT/MFN/MAA."""
    pool = owned_pool(session, pool_id, owner.id)
    reference = get_pool(session, reference_pool_id, owner.id) if reference_pool_id else None
    if reference_pool_id and reference is None:
        detail = f"query.reference_pool_id: no pool with id {reference_pool_id!r}"
        raise ApiProblem(422, detail, code="unknown_pool", field="query.reference_pool_id",
                         errors=[{"field": "query.reference_pool_id", "message": detail, "type": "unknown_pool"}])
    return pool_metrics(session, pool, reference)


def _remove(session: Session, pool: Pool, dataset_id: str, *, evaluation_only: bool) -> Response:
    try:
        remove_dataset(session, pool, dataset_id, evaluation_only=evaluation_only)
    except NotInPool as exc:
        raise ApiProblem(404, exc.detail, code=exc.code) from None
    except DomainError as exc:
        raise problem_from(exc) from None
    session.commit()
    return Response(status_code=204)


_REMOVE_PROBLEMS = problem_responses(404, 409, notes={
    404: "No such pool, or the dataset is not in it.", 409: "A round of the pool is queued, running or cancelling."})


@router.delete("/{pool_id}/datasets/{dataset_id}", status_code=204, response_class=Response,
               responses=_REMOVE_PROBLEMS)
def remove_dataset_route(pool_id: str, dataset_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Take a dataset out of the pool: its members, their rows in earlier rounds, its evaluation-set use."""
    return _remove(session, owned_pool(session, pool_id, owner.id, for_update=True), dataset_id, evaluation_only=False)


@router.delete("/{pool_id}/eval-sets/{dataset_id}", status_code=204, response_class=Response,
               responses=_REMOVE_PROBLEMS)
def remove_eval_set_route(pool_id: str, dataset_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Stop scoring on an evaluation set: its link and the pool's earlier results on it go."""
    return _remove(session, owned_pool(session, pool_id, owner.id, for_update=True), dataset_id, evaluation_only=True)


@router.delete("/{pool_id}", status_code=204, response_class=Response, responses=problem_responses(
    404, 409, notes={409: "A round of the pool is queued, running or cancelling."}))
def delete_pool_route(pool_id: str, session: SessionDep, owner: OwnerDep) -> Response:
    """Delete a pool with its rounds, checkpoints and members; blobs are left to `adaptinf gc`."""
    pool = owned_pool(session, pool_id, owner.id, for_update=True)
    try:
        delete_pool(session, pool)
    except DomainError as exc:
        raise problem_from(exc) from None
    session.commit()
    return Response(status_code=204)
