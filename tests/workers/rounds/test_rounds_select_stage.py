"""The select stage: its cluster view is a picture (failing to draw it must not fail the round);
a feature shard whose blob was damaged after the features stage is computed again, once."""
from __future__ import annotations

import numpy as np
import pytest
from index_rows import corrupt_blob
from sqlalchemy import func, select

from service.cluster_views import ClusterViewMissing, load_cluster_view
from service.db.models import FeatureShard, Job, JobEvent, Round, Score, Selection
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


_TWO_SHARDS = {**POOL_CONFIG, "training": {"batch_size": 4, "max_steps": 1}, "shard_size": 4}


def _to_select_with_shard_1_damaged(env: RoundEnv, damage: str) -> tuple[str, str, str]:
    """A round of two shards run up to select, shard 1's blob then corrupted or deleted; returns
    (round id, job id, the damaged blob)."""
    pool_id = add_pool(env, _TWO_SHARDS)
    round_id, job_id = start_round(env, pool_id, [add_dataset(env, "a", list(range(8)))], budget=4, train=False)
    env.drain(until_kind="round.select")
    with env.factory() as s:
        blob = s.get(FeatureShard, (round_id, 1)).blob
    corrupt_blob(env.blobs, blob) if damage == "corrupt" else env.blobs.delete(blob)
    return round_id, job_id, blob


def _selection(env: RoundEnv, round_id: str) -> list[tuple]:
    with env.factory() as s:
        return [tuple(r) for r in s.execute(select(Selection.sample_id, Selection.cluster, Selection.expert,
                                                   Selection.stratum).where(Selection.round_id == round_id)
                                            .order_by(Selection.sample_id))]


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_shard_is_computed_again_and_the_round_selects_as_if_nothing_happened(
    round_env: RoundEnv, damage: str
) -> None:
    env = round_env
    round_id, job_id, blob = _to_select_with_shard_1_damaged(env, damage)
    env.drain()
    with env.factory() as s:
        rnd = s.get(Round, round_id)
        assert rnd.status == "succeeded", s.get(Job, job_id).error
        kinds = s.execute(select(Job.kind, Job.result).where(Job.parent_id == job_id).order_by(Job.created_at)).all()
        selects = [r for k, r in kinds if k == "round.select"]
        assert selects[0] == {"recomputing_shards": [1]} and selects[1]["selected"] == 4
        assert [k for k, _ in kinds].count("round.features") == 3  # shards 0 and 1, then shard 1 again
        shards = s.execute(select(FeatureShard.shard, FeatureShard.status, FeatureShard.blob, FeatureShard.rows)
                           .where(FeatureShard.round_id == round_id).order_by(FeatureShard.shard)).all()
        assert [(k, st, n) for k, st, _, n in shards] == [(0, "done", 4), (1, "done", 4)]
        assert env.blobs.verify(shards[1].blob)
        n, distinct = s.execute(select(func.count(), func.count(func.distinct(Score.sample_id)))
                                .where(Score.round_id == round_id)).one()
        assert n == distinct == 8
        warned = s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id, JobEvent.level == "warning")).all()
        assert f"feature shard 1: its blob {blob} is missing or corrupt; computing the shard again" in warned
    # the recomputed shard holds the same features: the selection is the one an unharmed round makes
    pool_id = add_pool(env, _TWO_SHARDS)
    with env.factory() as s:
        datasets = s.get(Round, round_id).params["dataset_ids"]
    clean_id, _ = start_round(env, pool_id, datasets, budget=4, train=False)
    env.drain()
    assert _selection(env, round_id) == _selection(env, clean_id) != []


def test_a_shard_damaged_again_after_its_recompute_fails_the_round_naming_the_blob(round_env: RoundEnv) -> None:
    env = round_env
    round_id, job_id, _ = _to_select_with_shard_1_damaged(env, "corrupt")
    env.deliver(*env.sent.pop(0))  # the first select sends shard 1 back to features
    env.drain(until_kind="round.select")  # where its job computes it again
    assert env.sent and env.sent[0][1] == "round.select"
    with env.factory() as s:
        blob = s.get(FeatureShard, (round_id, 1)).blob
    corrupt_blob(env.blobs, blob)
    env.drain()
    with env.factory() as s:
        parent = s.get(Job, job_id)
        assert (parent.status, s.get(Round, round_id).status) == ("failed", "failed")
        assert parent.error["code"] == "blob_corrupt"
        assert f"feature shard 1 blob {blob} is missing or corrupt again" in parent.error["message"]
        assert "ADAPTINF_DATA_DIR" in parent.error["message"] and "start a new round" in parent.error["message"]
        assert s.scalar(select(func.count()).select_from(Selection).where(Selection.round_id == round_id)) == 0
