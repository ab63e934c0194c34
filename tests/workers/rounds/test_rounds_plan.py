"""Candidate set (content-hash dedup, permanent pruning) and the shard plan."""
from __future__ import annotations

from service.db.models import PoolMember, Sample
from tests.workers.rounds.rounds_helpers import RoundEnv, add_dataset, add_pool, round_env  # noqa: F401
from workers.rounds.plan import CandidatePlan, plan_candidates, shard_bounds, shard_rows
from workers.rounds.plan_blob import freeze_plan, load_plan


def test_shard_bounds_cover_every_position_once() -> None:
    for n in range(0, 30):
        for size in (1, 4, 7, 40):
            bounds = shard_bounds(n, size)
            covered = [i for a, b in bounds for i in range(a, b)]
            assert covered == list(range(n)) and all(0 < b - a <= size for a, b in bounds)


def test_candidates_dedup_and_keep_pruned_out(round_env: RoundEnv) -> None:
    env = round_env
    a = add_dataset(env, "a", [0, 1, 2, 3])
    pool_id = add_pool(env)
    with env.factory() as s:
        ids_a = [x.id for x in s.query(Sample).filter(Sample.dataset_id == a).order_by(Sample.id)]
        s.add_all([PoolMember(pool_id=pool_id, sample_id=ids_a[0], status="active", joined_round=1),
                   PoolMember(pool_id=pool_id, sample_id=ids_a[1], status="active", joined_round=1),
                   PoolMember(pool_id=pool_id, sample_id=ids_a[2], status="pruned", joined_round=1, pruned_round=1,
                              reason="near_duplicate")])
        s.commit()
    # b repeats a's sample 1 (active: a duplicate) and 2 (pruned member's content: new, not active)
    # and holds sample 5 twice (the second copy is a duplicate of the first)
    b = add_dataset(env, "b", [1, 2, 5, 5, 6])
    with env.factory() as s:
        ids_b = [x.id for x in s.query(Sample).filter(Sample.dataset_id == b).order_by(Sample.id)]
        plan = plan_candidates(s, pool_id, [a, b])
    assert plan.members == ids_a[:2]
    # a's own samples: 0, 1 active already; 2 pruned (permanent); 3 new
    assert plan.previously_pruned == [ids_a[2]]
    assert plan.new == [ids_a[3], ids_b[1], ids_b[2], ids_b[4]]
    assert plan.duplicates == [[ids_b[0], ids_a[1]], [ids_b[3], ids_b[2]]]
    assert plan.candidates == sorted(plan.members + plan.new)

    with env.factory() as s:
        sequential = plan_candidates(s, pool_id, [a, b], new_only=True)
    assert sequential.candidates == plan.new  # members stay members, but are no candidates
    assert (sequential.members, sequential.new, sequential.duplicates) == (plan.members, plan.new, plan.duplicates)

    blobs = env.settings.blob_store()
    sha = freeze_plan(plan, blobs, 4)
    assert freeze_plan(plan_candidates_again(env, pool_id, [a, b]), blobs, 4) == sha  # canonical bytes
    assert load_plan(blobs, sha) == plan
    rows = shard_rows("r", plan, 4)
    assert [(r["shard"], r["first_sample_id"], r["last_sample_id"]) for r in rows] == [
        (0, plan.candidates[0], plan.candidates[3]), (1, plan.candidates[4], plan.candidates[5])]


def plan_candidates_again(env: RoundEnv, pool_id: str, ids: list[str]) -> CandidatePlan:
    with env.factory() as s:
        return plan_candidates(s, pool_id, ids)
