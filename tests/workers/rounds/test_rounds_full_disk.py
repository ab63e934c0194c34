"""A round stage on a full disk: the data dir (blobs, work files, model cache) on a real tmpfs,
filled before the feature shards are written. The round fails with `disk_full` and the way out,
leaves no temp file behind, and once the space is freed the next round succeeds."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from disktools import fill, small_tmpfs

from service.db.models import Job, Round
from tests.workers.rounds.rounds_helpers import RoundEnv, add_dataset, add_pool, close_round_env, make_round_env, start_round

_FAST = {"features": {"proj_dim": 32, "batch_size": 8}, "selection": {"n_clusters": 2, "n_strata": 4},
         "training": {"batch_size": 4, "max_steps": 1}, "warmup_fraction": 0.2, "shard_size": 3}


@pytest.fixture
def env(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundEnv]:
    # the database stays on the ordinary disk (so the failure can be recorded); the data dir is the small one
    with small_tmpfs(tmp_path / "data", "64m"):
        env = make_round_env(sqlite_template, tmp_path, monkeypatch, "full-disk")
        try:
            yield env
        finally:
            close_round_env(env)


def _temp_files(env: RoundEnv) -> list[Path]:
    work, tmp = env.settings.work_dir, env.settings.blob_dir / "tmp"
    shards = list((work / "shards").glob("*")) if (work / "shards").exists() else []
    return shards + list(tmp.glob("*")) + list(work.glob("select-*")) + list(work.glob("adapter-*"))


@pytest.mark.slow  # a real model runs two rounds: ~16 s here
def test_a_stage_on_a_full_disk_fails_the_round_with_disk_full_and_the_next_round_works(env: RoundEnv) -> None:
    ds = add_dataset(env, "a", list(range(6)))
    pool_id = add_pool(env, _FAST)
    round_id, job_id = start_round(env, pool_id, [ds], budget=2)
    env.drain(until_kind="round.features")  # prepare and warm-up wrote their blobs; the shards are next
    filler = fill(env.settings.data_dir)
    env.drain()
    with env.factory() as s:
        parent, rnd = s.get(Job, job_id), s.get(Round, round_id)
        assert (parent.status, rnd.status) == ("failed", "failed")
        assert parent.error["code"] == "disk_full", parent.error
        assert "round.features failed" in parent.error["message"]
        assert "ADAPTINF_DATA_DIR" in parent.error["message"] and str(env.settings.data_dir) not in parent.error["message"]
    assert _temp_files(env) == []

    filler.unlink()
    round_id, job_id = start_round(env, pool_id, [ds], budget=2)
    env.drain()
    with env.factory() as s:
        assert (s.get(Job, job_id).status, s.get(Round, round_id).status) == ("succeeded", "succeeded")
