"""The select stage's cluster view is a picture: failing to draw it must not fail the round."""
from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select

from service.cluster_views import ClusterViewMissing, load_cluster_view
from service.db.models import Job, Round
from tests.workers.rounds.rounds_helpers import POOL_CONFIG, RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401


def test_a_map_that_cannot_be_drawn_leaves_the_round_without_one(
    round_env: RoundEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.rounds import select_stage

    def broken(*_args: object, **_kwargs: object) -> None:
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(select_stage, "build_cluster_view", broken)
    env = round_env
    pool_id = add_pool(env, {**POOL_CONFIG, "training": {"batch_size": 4, "max_steps": 1}})
    round_id, job_id = start_round(env, pool_id, [add_dataset(env, "a", list(range(8)))], budget=4)
    env.drain()
    with env.factory() as s:
        rnd = s.get(Round, round_id)
        assert rnd.status == "succeeded" and rnd.result["selected"] == 4
        results = s.scalars(select(Job.result).where(Job.parent_id == job_id, Job.kind == "round.select")).all()
        assert results and all(r["cluster_view_blob"] is None for r in results)
        with pytest.raises(ClusterViewMissing, match="drawing it failed"):
            load_cluster_view(s, env.blobs, rnd)
