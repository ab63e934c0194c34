"""A round's cluster view (the dashboard's map and score histograms): find and read the blob its
select stage wrote. No web framework here."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Job, Round
from core.blobs import BlobStore


class ClusterViewMissing(Exception):
    """The round's select stage finished without a view (a release before the dashboard, or the map
    could not be drawn), or its blob is gone."""


def cluster_view_blob(session: Session, rnd: Round) -> str | None:
    """The sha256 named by the round's succeeded select stage job, or None."""
    if rnd.job_id is None:
        return None
    results = session.scalars(
        select(Job.result).where(Job.parent_id == rnd.job_id, Job.kind == "round.select", Job.status == "succeeded")
    )
    return next((r["cluster_view_blob"] for r in results if r and r.get("cluster_view_blob")), None)


def load_cluster_view(session: Session, blobs: BlobStore, rnd: Round) -> dict[str, Any]:
    """The view the select stage stored: candidates, points {sample_id, x, y, cluster, selected,
    pruned} and histograms; raises ClusterViewMissing when there is none."""
    sha = cluster_view_blob(session, rnd)
    if sha is None:
        raise ClusterViewMissing(f"round {rnd.id}'s select stage stored no cluster view (it ran before the dashboard existed, or drawing it failed: the worker's log says why)")
    if not blobs.exists(sha):
        raise ClusterViewMissing(f"round {rnd.id}'s cluster view blob {sha} is missing from the blob store")
    with blobs.open(sha) as f:
        return json.loads(f.read())
