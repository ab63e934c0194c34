"""The round's stage machine on SQLite with tiny-llava, tasks called directly (no Celery): a full
round and a second one on top, duplicate deliveries, a crash after a commit, cancel, failure."""
from __future__ import annotations

import json
import tarfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from core.files import file_sha256
from service.db.models import (
    Checkpoint, EvalResult, FeatureShard, IndexVersion, Job, Pool, PoolMember, Round, RoundBlob, Score, Selection,
)
from service.lifecycle import request_cancel
from tests.workers.rounds.rounds_helpers import POOL_CONFIG, RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401
from workers.rounds.plan_blob import load_plan


def pool_snapshot(env: RoundEnv, pool_id: str) -> dict:
    with env.factory() as s:
        pool = s.get(Pool, pool_id)
        members = s.execute(select(PoolMember.sample_id, PoolMember.status, PoolMember.joined_round,
                                   PoolMember.pruned_round, PoolMember.reason, PoolMember.cluster)
                            .where(PoolMember.pool_id == pool_id).order_by(PoolMember.sample_id)).all()
        ckpts = s.scalars(select(Checkpoint.id).where(Checkpoint.pool_id == pool_id).order_by(Checkpoint.id)).all()
        return {"members": [tuple(m) for m in members], "checkpoint": pool.current_checkpoint_id,
                "rounds": pool.rounds_completed, "checkpoints": list(ckpts)}


def count(env: RoundEnv, stmt) -> int:  # noqa: ANN001
    with env.factory() as s:
        return int(s.scalar(stmt))


def test_two_rounds_end_to_end(round_env: RoundEnv) -> None:
    env = round_env
    a = add_dataset(env, "a", list(range(14)))
    b = add_dataset(env, "b", [0, 1] + list(range(14, 22)))  # 0 and 1 repeat dataset a: exact duplicates
    ev = add_dataset(env, "eval", list(range(40, 44)))
    pool_id = add_pool(env, {**POOL_CONFIG, "pool_index": True}, eval_sets=((ev, "vqa"),))
    round_id, job_id = start_round(env, pool_id, [a, b], budget=8, seed=3)

    # Every message delivered twice: the second delivery of a finished job must change nothing.
    env.drain(until_kind="round.finalize", twice=True)
    assert pool_snapshot(env, pool_id) == {"members": [], "checkpoint": None, "rounds": 0, "checkpoints": []}
    with env.factory() as s:
        parent = s.get(Job, job_id)
        assert (parent.status, parent.stage, parent.lease_owner) == ("running", "finalize", None)
        kinds = s.scalars(select(Job.kind).where(Job.parent_id == job_id)).all()
    assert sorted(set(kinds)) == ["round.features", "round.finalize", "round.prepare", "round.select", "round.train",
                                  "round.warmup"]
    assert kinds.count("round.features") == 4 and all(kinds.count(k) == 1 for k in set(kinds) - {"round.features"})
    env.drain(twice=True)

    with env.factory() as s:
        rnd, parent = s.get(Round, round_id), s.get(Job, job_id)
        assert (rnd.status, parent.status) == ("succeeded", "succeeded"), parent.error
        assert rnd.finished_at is not None
        res = rnd.result
        candidates = load_plan(env.blobs, parent.result["candidates_blob"]).candidates
        assert (res["candidates"], res["new_samples"], res["duplicates"], res["warmup"]) == (22, 22, 2, True)
        assert (res["budget"], res["selected"], res["method"]) == (8, 8, "adapt-inf")
        assert sum(c["selected"] for c in res["clusters"]) == 8 and sum(c["size"] for c in res["clusters"]) == 22
        assert res["train"]["steps"] == 2 and res["checkpoint_id"] is not None
        assert set(res["eval"]) == {"vqa"} and res["eval"]["vqa"]["n"] == 4
        # every candidate scored exactly once, in exactly one done shard
        scores = s.scalars(select(Score.sample_id).where(Score.round_id == round_id)).all()
        assert sorted(scores) == candidates and len(set(scores)) == 22
        shards = s.scalars(select(FeatureShard).where(FeatureShard.round_id == round_id)).all()
        assert [sh.status for sh in shards] == ["done"] * 4 and sum(sh.rows for sh in shards) == 22
        sel = s.execute(select(Selection).where(Selection.round_id == round_id)).scalars().all()
        assert len(sel) == 8 and {x.sample_id for x in sel} <= set(candidates)
        assert all(x.expert is not None and x.stratum is not None for x in sel)
        members = s.scalars(select(PoolMember).where(PoolMember.pool_id == pool_id)).all()
        assert sorted(m.sample_id for m in members) == candidates and {m.joined_round for m in members} == {1}
        assert res["pool_size"] == sum(m.status == "active" for m in members) == 22 - res["pruned"] == 18
        assert sum(c["pruned"] for c in res["clusters"]) == res["pruned"] == 4
        assert all(m.pruned_round == 1 and m.reason in ("near_duplicate", "pool_cap") for m in members if m.status == "pruned")
        pool = s.get(Pool, pool_id)
        assert (pool.rounds_completed, pool.current_checkpoint_id) == (1, res["checkpoint_id"])
        kinds = dict(s.execute(select(Checkpoint.kind, Checkpoint.id).where(Checkpoint.pool_id == pool_id)).all())
        assert set(kinds) == {"warmup", "round"}
        ckpt = s.get(Checkpoint, res["checkpoint_id"])
        evals = s.scalars(select(EvalResult).where(EvalResult.checkpoint_id == ckpt.id)).all()
        assert [(e.dataset_id, e.skill, e.metrics["n"]) for e in evals] == [(ev, "vqa", 4)]
        warm = s.scalars(select(EvalResult).where(EvalResult.checkpoint_id == kinds["warmup"])).all()
        assert [(e.skill, e.metrics["n"]) for e in warm] == [("vqa", 4)]
        # the base model's scores (adapter off): what a fresh LoRA (B = 0) scores, not the warm-up's
        assert list(res["base_eval_datasets"]) == [ev] and res["base_eval_datasets"][ev]["skill"] == "vqa"
        base_loss = res["base_eval_datasets"][ev]["loss"]
        assert base_loss == pytest.approx(fresh_model_loss(env, ev), rel=1e-5)
        assert abs(base_loss - warm[0].metrics["loss"]) > 1e-4 and abs(base_loss - evals[0].metrics["loss"]) > 1e-4
        # scoring the base switched the adapter off only for that: the cached trained model has it on
        from workers.rounds import models_cache

        cached = list(models_cache._cache.values())
        assert cached and all(not m.disable_adapters for lm in cached for m in lm.model.modules()
                              if hasattr(m, "disable_adapters") and hasattr(m, "lora_A"))
        # the pool's index version covers exactly the surviving members
        (iv,) = s.scalars(select(IndexVersion).where(IndexVersion.pool_id == pool_id)).all()
        assert (iv.round_id, iv.ntotal, iv.dim, iv.kind) == (round_id, res["pool_size"], 64, "flat")
        assert iv.blob == iv.sha256 == file_sha256(env.blobs.materialize(iv.blob))
        assert iv.size_bytes == env.blobs.size(iv.blob)
        active = sorted(m.sample_id for m in members if m.status == "active")
        assert sorted(faiss_ids(str(env.blobs.materialize(iv.blob)))) == active
        # every blob the round's stages stored is named by a typed reference, in its kind
        refs = dict(s.execute(select(RoundBlob.kind, RoundBlob.blob).where(RoundBlob.round_id == round_id)).all())
        assert set(refs) == {"candidates", "warmup_adapter", "decision", "cluster_view", "index", "adapter"}
        assert (refs["candidates"], refs["warmup_adapter"], refs["adapter"], refs["index"]) == (
            parent.result["candidates_blob"], s.get(Checkpoint, kinds["warmup"]).blob, ckpt.blob, iv.blob)
        with env.blobs.open(refs["decision"]) as f:
            assert len(json.load(f)["assign"]) == 22
        assert all(env.blobs.verify(sha) for sha in refs.values())

    # a damaged index version is rebuilt from the round's own shards into the very same bytes
    from index_rows import corrupt_blob

    from workers.rounds.index_rebuild import rebuild_index_version

    corrupt_blob(env.blobs, iv.blob)
    rebuilt = rebuild_index_version(env.factory, env.blobs, env.settings.work_dir, iv.id)
    assert rebuilt["rebuilt"] and rebuilt["sha256"] == iv.sha256 and env.blobs.verify(iv.sha256)

    # the checkpoint is a PEFT adapter directory at the archive root, loadable on the preset base
    from peft import PeftModel

    from workers.engine.models import build_preset

    out = env.settings.work_dir.parent / "ckpt"
    with env.blobs.open(ckpt.blob) as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["adapter_config.json", "adapter_model.safetensors"]
        tar.extractall(out, filter="data")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llava"
    model = PeftModel.from_pretrained(build_preset("tiny-llava")[0], out)
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())

    # Round 2: new samples plus one duplicate of a pool member; no warm-up (the pool has a checkpoint).
    c = add_dataset(env, "c", [2] + list(range(22, 28)))
    before = pool_snapshot(env, pool_id)
    round2, job2 = start_round(env, pool_id, [c], budget=0.5, seed=1)
    env.drain()
    with env.factory() as s:
        r2 = s.get(Round, round2)
        assert r2.status == "succeeded", s.get(Job, job2).error
        res2 = r2.result
        assert (res2["candidates"], res2["new_samples"], res2["duplicates"], res2["warmup"]) == (
            before_active(before) + 6, 6, 1, False)
        assert res2["budget"] == round(0.5 * res2["candidates"])
        assert s.scalar(select(func.count()).where(Job.parent_id == job2, Job.kind == "round.warmup")) == 0
        joined = dict(s.execute(select(PoolMember.sample_id, PoolMember.joined_round)
                                .where(PoolMember.pool_id == pool_id)).all())
        assert sorted(v for v in joined.values()).count(2) == 6
        assert res2["pool_size"] == 18 and res2["pruned"] == 6
        assert res2["base_eval_datasets"] == {}  # the base of `ev` was scored in round 1
        pool = s.get(Pool, pool_id)
        assert pool.rounds_completed == 2 and pool.current_checkpoint_id == res2["checkpoint_id"] != res["checkpoint_id"]
        # pruned members stay as rows, marked with round and reason
        for m in s.scalars(select(PoolMember).where(PoolMember.pool_id == pool_id, PoolMember.status == "pruned")):
            assert m.pruned_round in (1, 2) and m.reason in ("near_duplicate", "pool_cap")


def fresh_model_loss(env: RoundEnv, dataset_id: str) -> float:
    """The response loss of a freshly initialised LoRA model (the base) on an evaluation dataset."""
    from workers.engine.evaluation import EvalSet, evaluate
    from workers.engine.models import LoraSpec, ModelSpec, load_model
    from workers.rounds.samples import load_dataset_samples

    with env.factory() as s:
        samples = load_dataset_samples(s, dataset_id, env.blobs)
    # any fresh LoRA: B = 0 leaves the base model's outputs unchanged
    loaded = load_model(ModelSpec("tiny-llava", model_type="llava", device="cpu"), lora=LoraSpec(seed=123))
    return evaluate(loaded, [EvalSet(dataset_id, "vqa", samples)])["vqa"]["loss"]


def faiss_ids(path: str) -> list[int]:
    import faiss

    index = faiss.read_index(path)
    return faiss.vector_to_array(faiss.downcast_index(index).id_map).tolist()


def before_active(snapshot: dict) -> int:
    return sum(1 for m in snapshot["members"] if m[1] == "active")


def test_crash_after_commit_redelivery_does_nothing(round_env: RoundEnv) -> None:
    """A worker that died after a shard's commit but before its job was marked done: the reaper
    re-queues the job and its re-run finds the shard done, adds no scores, sends nothing."""
    env = round_env
    ds = add_dataset(env, "a", list(range(10)))
    pool_id = add_pool(env, {**_fast(), "shard_size": 5})
    round_id, job_id = start_round(env, pool_id, [ds], budget=4, train=False)
    env.drain(until_kind="round.features")
    shard_job, kind = env.sent.pop(0)
    env.deliver(shard_job, kind)
    with env.factory() as s:
        job = s.get(Job, shard_job)
        assert job.status == "succeeded"
        job.status, job.finished_at = "queued", None  # as the reaper leaves it after a lost worker
        s.commit()
    n_scores = count(env, select(func.count()).select_from(Score).where(Score.round_id == round_id))
    sent_before = list(env.sent)
    assert env.deliver(shard_job, kind)["status"] == "succeeded"
    assert count(env, select(func.count()).select_from(Score).where(Score.round_id == round_id)) == n_scores == 5
    assert env.sent == sent_before
    with env.factory() as s:
        assert s.get(Job, shard_job).result == {"skipped": "shard 0 is already done"}
    # and the parent task delivered again starts nothing
    assert env.deliver(job_id, "round") == {"job_id": job_id, "started": False}
    env.drain()
    with env.factory() as s:
        assert s.get(Round, round_id).status == "succeeded"
        assert s.get(Round, round_id).result["checkpoint_id"] is None
        assert s.get(Pool, pool_id).current_checkpoint_id is None


def _fast() -> dict:
    return {"features": {"proj_dim": 32, "batch_size": 8}, "selection": {"n_clusters": 2, "n_strata": 4},
            "training": {"batch_size": 4, "max_steps": 1}, "warmup_fraction": 0.2}


def test_cancel_mid_features_leaves_pool_unchanged(round_env: RoundEnv) -> None:
    env = round_env
    first = add_dataset(env, "a", list(range(8)))
    pool_id = add_pool(env, {**_fast(), "shard_size": 4})
    start_round(env, pool_id, [first], budget=3)
    env.drain()
    before = pool_snapshot(env, pool_id)
    assert before["rounds"] == 1 and before["checkpoint"] is not None

    second = add_dataset(env, "b", list(range(8, 16)))
    round_id, job_id = start_round(env, pool_id, [second], budget=3)
    env.drain(until_kind="round.features")
    shard_job, kind = env.sent.pop(0)
    env.deliver(shard_job, kind)  # one shard done, then the user cancels
    with env.factory() as s:
        request_cancel(s, s.get(Job, job_id))
        s.commit()
    env.drain()
    with env.factory() as s:
        parent, rnd = s.get(Job, job_id), s.get(Round, round_id)
        assert (parent.status, rnd.status) == ("cancelled", "cancelled")
        assert parent.error["code"] == "cancelled" and rnd.finished_at is not None
        children = dict(s.execute(select(Job.id, Job.status).where(Job.parent_id == job_id)).all())
        assert children[shard_job] == "succeeded" and "cancelled" in children.values()
        assert all(v in ("succeeded", "cancelled") for v in children.values())
    assert pool_snapshot(env, pool_id) == before


def test_failed_stage_fails_the_round(round_env: RoundEnv) -> None:
    env = round_env
    ds = add_dataset(env, "a", list(range(6)))
    pool_id = add_pool(env, {**_fast(), "shard_size": 3})
    round_id, job_id = start_round(env, pool_id, [ds], budget=2)
    env.drain(until_kind="round.features")
    with env.factory() as s:
        sha = s.get(Job, job_id).result["candidates_blob"]
    env.blobs.path(sha).chmod(0o644)
    env.blobs.path(sha).write_bytes(b"tampered")  # the frozen candidate list no longer matches its sha
    env.drain()
    with env.factory() as s:
        parent, rnd = s.get(Job, job_id), s.get(Round, round_id)
        assert (parent.status, rnd.status) == ("failed", "failed")
        assert parent.error["code"] == "blob_corrupt"
        assert "round.features failed" in parent.error["message"] and "corrupt" in parent.error["message"]
    assert pool_snapshot(env, pool_id) == {"members": [], "checkpoint": None, "rounds": 0, "checkpoints": []}


def _select_with_shard_1_replaced(env: RoundEnv, tmp_path: Path, damage) -> tuple[str, dict]:
    """Run a round of two shards up to select, swap shard 1's blob for `damage(batch, meta)`'s
    (batch, meta), run it out; returns (pool id, the round job's error)."""
    from workers.engine.features import read_shard, read_shard_meta, write_shard

    ds = add_dataset(env, "a", list(range(6)))
    pool_id = add_pool(env, {**_fast(), "shard_size": 3})
    round_id, job_id = start_round(env, pool_id, [ds], budget=2)
    env.drain(until_kind="round.select")
    with env.factory() as s:
        shard = s.get(FeatureShard, (round_id, 1))
        path = env.blobs.path(shard.blob)
        write_shard(tmp_path / "bad.npz", *damage(read_shard(path), read_shard_meta(path)))
        shard.blob = env.blobs.put_file(tmp_path / "bad.npz").sha256
        s.commit()
    env.drain()
    with env.factory() as s:
        parent = s.get(Job, job_id)
        assert parent.status == "failed"
        return pool_id, parent.error


def test_select_refuses_a_shard_computed_with_another_projection(round_env: RoundEnv, tmp_path: Path) -> None:
    """A shard from another feature config (say, a worker of an older release redelivered it)
    fails the round with a clear error instead of mixing incomparable features."""

    def other_projection(batch, meta):  # noqa: ANN001, ANN202
        return batch, {**meta, "config": {**meta["config"], "projection": "rademacher"}}

    pool_id, error = _select_with_shard_1_replaced(round_env, tmp_path, other_projection)
    assert error["code"] == "blob_corrupt"
    assert "feature shard 1" in error["message"] and "cannot mix" in error["message"]
    assert pool_snapshot(round_env, pool_id)["rounds"] == 0


@pytest.mark.parametrize("damage", ["narrower", "fewer rows"])
def test_select_refuses_a_shard_whose_shape_does_not_match(round_env: RoundEnv, tmp_path: Path, damage: str) -> None:
    """The select stage writes the shards' rows one after another into one file: a shard of
    another width, or with fewer rows than SQL recorded, fails the round instead of shifting
    every later row."""
    from dataclasses import replace

    def reshape(batch, meta):  # noqa: ANN001, ANN202
        if damage == "narrower":
            return replace(batch, features=batch.features[:, :-1]), meta
        return replace(batch, ids=batch.ids[:-1], features=batch.features[:-1],
                       scores={k: v[:-1] for k, v in batch.scores.items()}), meta

    pool_id, error = _select_with_shard_1_replaced(round_env, tmp_path, reshape)
    assert error["code"] == "blob_corrupt" and "feature shard 1" in error["message"]
    assert ("shape" if damage == "narrower" else "its SQL row says 3") in error["message"]
    assert pool_snapshot(round_env, pool_id)["rounds"] == 0


def test_reaper_leaves_a_waiting_parent_alone(round_env: RoundEnv) -> None:
    from workers.leases import utcnow
    from workers.reaper import reap_expired

    env = round_env
    ds = add_dataset(env, "a", list(range(4)))
    pool_id = add_pool(env, _fast())
    _, job_id = start_round(env, pool_id, [ds], budget=2)
    env.drain(until_kind="round.prepare")
    with env.factory() as s:
        touched = reap_expired(s, env.settings, now=utcnow() + timedelta(hours=1))
        parent = s.get(Job, job_id)
        assert job_id not in touched and (parent.status, parent.stage) == ("running", "prepare")


def test_a_new_only_round_trains_on_the_new_samples_and_keeps_the_members(round_env: RoundEnv) -> None:
    """`candidates: "new"` (sequential fine-tuning): the earlier members are no candidates, keep their
    clusters and stay active; the new samples join the pool."""
    env = round_env
    a = add_dataset(env, "a", list(range(10)))
    b = add_dataset(env, "b", list(range(10, 16)))
    pool_id = add_pool(env)
    start_round(env, pool_id, [a], budget=4, method="full", prune=False)
    env.drain()
    before = {m[0]: m for m in pool_snapshot(env, pool_id)["members"]}
    round_id, job_id = start_round(env, pool_id, [b], budget=4, method="full", prune=False, candidates="new")
    env.drain()
    with env.factory() as s:
        rnd, parent = s.get(Round, round_id), s.get(Job, job_id)
        assert (rnd.status, parent.status) == ("succeeded", "succeeded"), parent.error
        new = load_plan(env.blobs, parent.result["candidates_blob"]).candidates
        selected = sorted(x.sample_id for x in s.scalars(select(Selection).where(Selection.round_id == round_id)))
    assert len(new) == 6 and not set(new) & set(before)
    assert rnd.result["candidates"] == rnd.result["selected"] == 6 and selected == new
    after = {m[0]: m for m in pool_snapshot(env, pool_id)["members"]}
    assert all(after[sid] == before[sid] for sid in before)  # status, joined round and cluster untouched
    assert sorted(set(after) - set(before)) == new and all(after[sid][2] == 2 for sid in new)


def test_pool_caps_in_a_round_keep_per_cluster_then_budget_multiple_and_new_only_rounds(round_env: RoundEnv) -> None:
    env = round_env

    def active_by_cluster(pool_id: str) -> tuple[dict[int, int], dict[int, int]]:
        with env.factory() as s:
            members = s.scalars(select(PoolMember).where(PoolMember.pool_id == pool_id)).all()
        active = np.bincount([m.cluster for m in members if m.status == "active"], minlength=3)
        # what dedup alone leaves per cluster: every member but the near-duplicates
        undup = np.bincount([m.cluster for m in members if m.reason != "near_duplicate"], minlength=3)
        return active, undup

    # keep_per_cluster binds (at most 2 of each cluster: 6 < the budget cap of 100 × 6)
    a = add_dataset(env, "a", list(range(20)))
    keep = add_pool(env, {**POOL_CONFIG, "pruning": {"max_pool_size": None, "budget_multiple": 100, "keep_per_cluster": 2}})
    start_round(env, keep, [a], budget=6, train=False)
    env.drain()
    active, undup = active_by_cluster(keep)
    assert active.tolist() == np.minimum(undup, 2).tolist() and active.sum() < 20

    # budget_multiple binds: ceil(1.5 × 6) = 9, water-filled across the clusters
    capped = add_pool(env, {**POOL_CONFIG, "pruning": {"max_pool_size": None, "budget_multiple": 1.5}})
    start_round(env, capped, [a], budget=6, train=False)
    env.drain()
    assert active_by_cluster(capped)[0].sum() == 9
    # no FAISS index unless the pool asks for one (`pool_index`, off by default)
    assert count(env, select(func.count()).select_from(IndexVersion)) == 0
    assert count(env, select(func.count()).select_from(RoundBlob).where(RoundBlob.kind == "index")) == 0

    # a round over its new samples only still keeps the whole pool under the cap: the pool is
    # full, so the new samples are all pruned and the old members stay
    with env.factory() as s:
        before = set(s.scalars(select(PoolMember.sample_id).where(PoolMember.pool_id == capped,
                                                                  PoolMember.status == "active")))
    b = add_dataset(env, "b", list(range(20, 40)))
    round_id, _ = start_round(env, capped, [b], budget=6, train=False, candidates="new")
    env.drain()
    with env.factory() as s:
        assert s.get(Round, round_id).result["pool_size"] == active_by_cluster(capped)[0].sum() == 9
        members = s.scalars(select(PoolMember).where(PoolMember.pool_id == capped)).all()
    assert {m.sample_id for m in members if m.status == "active"} == before
    assert all(m.status == "pruned" and m.reason in ("near_duplicate", "pool_cap") for m in members if m.joined_round == 2)


def _cancel_after_first_call(env: RoundEnv, job_id: str, calls: list, pause: float = 1.1):
    """A hook that asks to cancel the round during its first call and makes every call last longer
    than the stage's once-a-second cancel check."""
    import time

    def hook() -> None:
        calls.append(1)
        if len(calls) == 1:
            with env.factory() as s:
                request_cancel(s, s.get(Job, job_id))
                s.commit()
        time.sleep(pause)

    return hook


def test_cancel_is_honoured_inside_a_feature_shard(round_env: RoundEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.engine.features.compute import FeatureEngine

    env = round_env
    ds = add_dataset(env, "a", list(range(8)))
    pool_id = add_pool(env, {**_fast(), "features": {"proj_dim": 32, "batch_size": 2}, "shard_size": 8})
    round_id, job_id = start_round(env, pool_id, [ds], budget=3)
    env.drain(until_kind="round.features")
    calls: list = []
    hook = _cancel_after_first_call(env, job_id, calls)
    real = FeatureEngine.run_batch
    monkeypatch.setattr(FeatureEngine, "run_batch", lambda self, samples: (hook(), real(self, samples))[1])
    env.drain()
    assert len(calls) == 1  # the shard has 4 batches; it stopped at the one during which cancel came
    with env.factory() as s:
        assert (s.get(Job, job_id).status, s.get(Round, round_id).status) == ("cancelled", "cancelled")
        shard = s.execute(select(FeatureShard.status)).scalars().all()
        assert shard == ["pending"] and count(env, select(func.count()).select_from(Score)) == 0


def test_cancel_is_honoured_between_training_steps(round_env: RoundEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.rounds import runner

    env = round_env
    ds = add_dataset(env, "a", list(range(12)))
    config = {**_fast(), "training": {"batch_size": 1, "max_steps": 6, "epochs": 1}, "warmup_fraction": 1.0}
    pool_id = add_pool(env, config)
    round_id, job_id = start_round(env, pool_id, [ds], budget=6)
    env.drain(until_kind="round.warmup")
    calls: list = []
    hook = _cancel_after_first_call(env, job_id, calls)
    real = runner.ParentWatch.on_step
    totals: list = []
    monkeypatch.setattr(runner.ParentWatch, "on_step",
                        lambda self, info: (totals.append(info.total), hook(), real(self, info)))
    env.drain()
    assert totals == [6]  # the warm-up's epoch has 6 steps; it stopped at the one during which cancel came
    with env.factory() as s:
        assert (s.get(Job, job_id).status, s.get(Round, round_id).status) == ("cancelled", "cancelled")
        assert s.scalars(select(Checkpoint.id)).all() == []


def test_pruning_on_hidden_states_dedups_on_the_shards_hidden_embeddings(round_env: RoundEnv) -> None:
    from workers.engine.features import read_shard
    from workers.engine.pruning import PruneConfig, prune_pool
    from workers.engine.selection.clustering import Clustering

    env = round_env
    a = add_dataset(env, "a", list(range(16)))
    config = {**_fast(), "pruning": {"embedding": "hidden", "eps": 0.3, "max_pool_size": 12}, "shard_size": 7}
    pool_id = add_pool(env, config)
    round_id, _ = start_round(env, pool_id, [a], budget=4, train=False)
    env.drain()
    with env.factory() as s:
        assert s.get(Round, round_id).status == "succeeded"
        members = {m.sample_id: m for m in s.scalars(select(PoolMember).where(PoolMember.pool_id == pool_id))}
        blobs = s.scalars(select(FeatureShard.blob).where(FeatureShard.round_id == round_id)
                          .order_by(FeatureShard.shard)).all()
    shards = [read_shard(env.blobs.path(b)) for b in blobs]
    assert all(sh.hidden is not None and sh.hidden.shape[1] == 64 for sh in shards)
    ids = np.concatenate([sh.ids for sh in shards])
    hidden = np.concatenate([sh.hidden for sh in shards])
    assign = np.array([members[i].cluster for i in ids.tolist()], dtype=np.int64)
    clustering = Clustering(assign, np.zeros((int(assign.max()) + 1, 1), dtype=np.float32))
    want = prune_pool(ids, hidden, clustering, PruneConfig(embedding="hidden", eps=0.3, max_pool_size=12), 4)
    got = sorted((m.sample_id, m.reason) for m in members.values() if m.status == "pruned")
    assert got == sorted((p.sample_id, p.reason) for p in want)
    # the check discriminates: on the gradient features the same rule prunes other samples
    on_grads = prune_pool(ids, np.concatenate([sh.features for sh in shards]), clustering, PruneConfig(eps=0.3, max_pool_size=12), 4)
    assert want and {p.sample_id for p in on_grads} != {p.sample_id for p in want}
