"""What the dashboard draws of a round: the 2-D cluster map and the per-cluster score histograms."""
from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from service.api.deps import BlobsDep, OwnerDep, SessionDep
from service.api.errors import ApiProblem, not_found
from service.api.openapi import problem_responses
from service.cluster_views import ClusterViewMissing, load_cluster_view
from service.db.models import Round
from service.rounds import get_round, selection_ready
from core.blobs import BlobStore

router = APIRouter(prefix="/v1/rounds", tags=["rounds"])


class MapPoints(BaseModel):
    """Parallel arrays, one entry per mapped candidate."""

    sample_id: list[int]
    x: list[float] = Field(description="first principal component of the candidate's projected gradient features")
    y: list[float] = Field(description="second principal component")
    cluster: list[int]
    selected: list[bool] = Field(description="chosen for this round's training")
    pruned: list[bool] = Field(description="removed from the pool by this round")


class RoundMapOut(BaseModel):
    object: Literal["round.map"] = "round.map"
    round_id: str
    pool_id: str
    candidates: int = Field(description="the round's candidates; at most 20,000 of them, uniformly sampled, are mapped")
    points: MapPoints


class ScoreHistogramOut(BaseModel):
    cluster: int
    expert: str = Field(description="the cluster's scoring expert")
    log_scale: bool = Field(description="the scores are binned in log space, as selection uses them (ppl)")
    edges: list[float] = Field(description="bin edges, one more than the counts")
    counts: list[int] = Field(description="the cluster's candidates per bin")
    selected: list[int] = Field(description="the selected candidates per bin")
    unscored: int = Field(description="candidates with no finite score")


class RoundScoresOut(BaseModel):
    object: Literal["round.score_histograms"] = "round.score_histograms"
    round_id: str
    pool_id: str
    histograms: list[ScoreHistogramOut] = Field(description="one per cluster with an expert (none for random/full)")


def _view(session: Session, blobs: BlobStore, round_id: str, owner_id: str) -> tuple[Round, dict[str, Any]]:
    rnd = get_round(session, round_id, owner_id)
    if rnd is None:
        raise not_found("round", round_id)
    if not selection_ready(session, rnd):
        raise ApiProblem(409, f"round {round_id} has not finished selection yet (status {rnd.status}); "
                         f"poll job {rnd.job_id}", code="selection_not_ready", round_status=rnd.status)
    try:
        return rnd, load_cluster_view(session, blobs, rnd)
    except ClusterViewMissing as exc:
        raise ApiProblem(404, str(exc), code="cluster_view_missing") from None


_VIEW_PROBLEMS = problem_responses(404, 409, notes={
    404: "No such round, or it ran before the service kept cluster views.",
    409: "The round has not finished its select stage yet."})


@router.get("/{round_id}/map", response_model=RoundMapOut, summary="A round's cluster map", responses=_VIEW_PROBLEMS)
def read_round_map(round_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> dict[str, Any]:
    """A 2-D PCA of the candidates' features, with each one's cluster and whether it was selected or pruned."""
    rnd, view = _view(session, blobs, round_id, owner.id)
    return {"object": "round.map", "round_id": rnd.id, "pool_id": rnd.pool_id, "candidates": view["candidates"],
            "points": view["points"]}


@router.get("/{round_id}/score-histograms", response_model=RoundScoresOut, summary="A round's score histograms",
            responses=_VIEW_PROBLEMS)
def read_score_histograms(round_id: str, session: SessionDep, owner: OwnerDep, blobs: BlobsDep) -> dict[str, Any]:
    """Per cluster: the histogram of its expert's scores over all its candidates and over the selected ones."""
    rnd, view = _view(session, blobs, round_id, owner.id)
    return {"object": "round.score_histograms", "round_id": rnd.id, "pool_id": rnd.pool_id,
            "histograms": view["histograms"]}
