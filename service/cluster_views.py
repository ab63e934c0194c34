"""A round's cluster view (the dashboard's map and score histograms): find and read the blob its
select stage wrote. No web framework here."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from core.blobs import BlobStore
from service.db.models import Round
from service.round_blobs import round_blob


class ClusterViewMissing(Exception):
    """The round's select stage finished without a view (a release before the dashboard, or the map
    could not be drawn), or its blob is gone."""


def cluster_view_blob(session: Session, rnd: Round) -> str | None:
    """The sha256 of the view the round's select stage stored (round_blobs), or None."""
    return round_blob(session, rnd.id, "cluster_view")


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
