"""A pool whose checkpoint blob is damaged recovers: the blob is re-published from the adapter
cache, or the next round continues from the newest intact checkpoint, or it fails naming them.
SQLite with tiny-llava, tasks called directly (the round env of test_rounds_advance.py)."""
from __future__ import annotations

import shutil

from sqlalchemy import select

from core.adapter_archive import adapter_cache_dir
from service.db.models import Checkpoint, Job, JobEvent, Pool, Round
from tests.workers.rounds.rounds_helpers import POOL_CONFIG, RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401
from workers.rounds import models_cache


def _corrupt(env: RoundEnv, sha: str) -> None:
    path = env.blobs.path(sha)
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 16)
    assert not env.blobs.verify(sha)


def _forget_copies(env: RoundEnv, sha: str) -> None:
    """No worker holds the adapter any more: neither loaded nor in the adapter cache."""
    models_cache.clear()
    shutil.rmtree(adapter_cache_dir(env.settings.work_dir, sha), ignore_errors=True)


def _round(env: RoundEnv, pool_id: str, datasets: list[str], seed: int) -> tuple[Round, Job, Job]:
    round_id, job_id = start_round(env, pool_id, datasets, budget=6, seed=seed)
    env.drain()
    with env.factory() as s:
        prepare = s.scalars(select(Job).where(Job.parent_id == job_id, Job.kind == "round.prepare")).one()
        s.expunge_all()
        return s.get(Round, round_id), s.get(Job, job_id), prepare


def test_a_damaged_checkpoint_is_repaired_or_skipped(round_env: RoundEnv) -> None:
    env = round_env
    a = add_dataset(env, "a", list(range(12)))
    pool_id = add_pool(env, POOL_CONFIG)
    rnd, parent, _ = _round(env, pool_id, [a], 1)
    assert parent.status == "succeeded", parent.error
    with env.factory() as s:
        current = s.get(Checkpoint, s.get(Pool, pool_id).current_checkpoint_id)
        warmup = s.scalars(select(Checkpoint).where(Checkpoint.pool_id == pool_id, Checkpoint.kind == "warmup")).one()
        current_sha, current_id, warmup_id = current.blob, current.id, warmup.id
    # training kept the saved adapter in the adapter cache: the damaged blob comes back from it
    assert (adapter_cache_dir(env.settings.work_dir, current_sha) / "adapter_config.json").is_file()
    _corrupt(env, current_sha)
    models_cache.clear()
    rnd, parent, prepare = _round(env, pool_id, [a], 2)
    assert parent.status == "succeeded", parent.error
    assert env.blobs.verify(current_sha)
    assert prepare.result["adapter_checkpoint_id"] == current_id and "damaged_checkpoints" not in prepare.result

    # no copy left of the (new) current checkpoint: the next round continues from the newest intact one
    with env.factory() as s:
        second = s.get(Checkpoint, s.get(Pool, pool_id).current_checkpoint_id)
        second_id, second_sha = second.id, second.blob
    _corrupt(env, second_sha)
    _forget_copies(env, second_sha)
    rnd, parent, prepare = _round(env, pool_id, [a], 3)
    assert parent.status == "succeeded", parent.error
    assert prepare.result["damaged_checkpoints"] == [second_id]
    assert prepare.result["adapter_checkpoint_id"] == current_id  # round 1's trained adapter, the newest intact
    # what the user reads: the round's result and its own job's events, not only the stage's
    assert (rnd.result["continued_from_checkpoint_id"], rnd.result["damaged_checkpoints"]) == (current_id, [second_id])
    with env.factory() as s:
        seen = s.scalars(select(JobEvent.message).where(JobEvent.job_id == parent.id, JobEvent.level == "warning")).all()
        assert f"this round continues from checkpoint {current_id}, the newest intact one" in seen
        assert s.get(Pool, pool_id).current_checkpoint_id not in (None, second_id)  # trained anew: the pool moved on
        checkpoints = s.scalars(select(Checkpoint).where(Checkpoint.pool_id == pool_id)).all()
        events = s.scalars(select(JobEvent).where(JobEvent.job_id == prepare.id, JobEvent.level == "warning")).all()
        s.expunge_all()
    assert [e.data["checkpoint_id"] for e in events] == [second_id, current_id]
    assert f"continues from checkpoint {current_id}" in events[-1].message

    # every checkpoint damaged, no copy anywhere: the round fails and names them
    for ckpt in checkpoints:
        if env.blobs.verify(ckpt.blob):
            _corrupt(env, ckpt.blob)
        _forget_copies(env, ckpt.blob)
    rnd, parent, _ = _round(env, pool_id, [a], 4)
    assert (rnd.status, parent.status, parent.error["code"]) == ("failed", "failed", "checkpoint_corrupt")
    assert all(c.id in parent.error["message"] for c in checkpoints)
    assert "create a new pool" in parent.error["message"] and warmup_id in parent.error["message"]
