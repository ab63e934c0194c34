"""Prepare's domain half: the round's candidate set and its feature-shard plan (frozen as a
blob by workers/rounds/plan_blob.py).

Candidates = active pool members ∪ the round's new samples (DESIGN §2 step 1). A new sample whose
content hash is already active in the pool, or repeats an earlier new sample (lower id), is an
exact duplicate: counted, never added twice. A sample id that is already a (pruned) member is not
re-added either: pruning is permanent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import PoolMember, Sample


@dataclass(frozen=True)
class CandidatePlan:
    """Sample ids, each list ascending. `duplicates` holds [sample id, the id it repeats]."""

    candidates: list[int]
    members: list[int]
    new: list[int]
    duplicates: list[list[int]] = field(default_factory=list)
    previously_pruned: list[int] = field(default_factory=list)


def plan_candidates(session: Session, pool_id: str, dataset_ids: list[str], new_only: bool = False) -> CandidatePlan:
    """The candidate set of a round over `dataset_ids` for the pool as it is now.

    `new_only` (a round's `candidates: "new"`) keeps only the samples this round adds: plain
    sequential fine-tuning, the baseline that forgets. They still join the pool.
    """
    member_rows = session.execute(
        select(PoolMember.sample_id, PoolMember.status, Sample.content_hash)
        .join(Sample, Sample.id == PoolMember.sample_id)
        .where(PoolMember.pool_id == pool_id)
    ).all()
    active = sorted(int(r.sample_id) for r in member_rows if r.status == "active")
    in_pool = {int(r.sample_id): r.status for r in member_rows}
    seen: dict[str, int] = {r.content_hash: int(r.sample_id) for r in member_rows if r.status == "active"}
    new, duplicates, pruned = [], [], []
    rows = session.execute(
        select(Sample.id, Sample.content_hash).where(Sample.dataset_id.in_(dataset_ids)).order_by(Sample.id)
    ).all()
    for sample_id, content_hash in rows:
        sample_id = int(sample_id)
        if in_pool.get(sample_id) == "pruned":
            pruned.append(sample_id)
        elif content_hash in seen:
            if seen[content_hash] != sample_id:
                duplicates.append([sample_id, seen[content_hash]])
        else:
            seen[content_hash] = sample_id
            new.append(sample_id)
    return CandidatePlan(sorted(new if new_only else active + new), active, new, duplicates, pruned)


def shard_bounds(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, end) positions of consecutive shards of at most `shard_size` candidates."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size!r}")
    return [(start, min(n, start + shard_size)) for start in range(0, n, shard_size)]


def shard_rows(round_id: str, plan: CandidatePlan, shard_size: int) -> list[dict[str, Any]]:
    """feature_shards rows (all pending) for the plan."""
    ids = plan.candidates
    return [
        {"round_id": round_id, "shard": k, "status": "pending", "rows": 0,
         "first_sample_id": ids[start], "last_sample_id": ids[end - 1]}
        for k, (start, end) in enumerate(shard_bounds(len(ids), shard_size))
    ]
