"""The fault matrix's rig, shared by all its cases: PostgreSQL, a private redis-server, one gated
worker, the API in-process, a 20-sample dataset, and the unfaulted reference round every faulted
round must match; plus what is compared between rounds (`round_facts`)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from disktools import small_tmpfs
from fault_procs import Gates, GatedWorker, RedisServer
from rounds_fixtures import POOL_CONFIG, create_pool, start_round, upload_ready, wait_round
from sqlalchemy import func, select

from service.config import Settings
from service.db.models import (
    Checkpoint, FeatureShard, IndexVersion, Job, JobEvent, PoolMember, Round, RoundBlob, Score, Selection,
)
from service.db.session import get_sessionmaker

# Every faulted round is the reference round again: the same candidates, seed and config (with a
# FAISS index version, so the index is faulted too), on a fresh pool so it warms up and trains.
CONFIG = {**POOL_CONFIG, "shard_size": 4, "pool_index": True}  # 3 shards, 3 clusters, 2 training steps
SEED, BUDGET = 3, 4
SAMPLES = list(range(12))
TMPFS_SIZE = "256m"  # the data dir; the full-disk case fills it


@dataclass
class Rig:
    tmp: Path
    settings: Settings
    redis: RedisServer
    gates: Gates
    http: Any = None  # fastapi TestClient, with the owner's key
    worker: GatedWorker | None = None
    dataset_id: str = ""
    tmpfs_skip: str | None = None  # why the data dir is not a small tmpfs (the full-disk case skips)
    started: list[GatedWorker] = field(default_factory=list)
    memo: dict[str, Any] = field(default_factory=dict)  # rounds several cases share, or why they failed

    def once(self, name: str, run: Callable[[], Any]) -> Any:  # noqa: ANN401
        """`run()`'s value, computed for the first case that needs it; a failure is kept too, so
        the other cases fail at once instead of running it again."""
        if name not in self.memo:
            try:
                self.memo[name] = run()
            except BaseException as exc:
                self.memo[name] = exc
                raise
        if isinstance(self.memo[name], BaseException):
            pytest.fail(f"the {name} round failed in an earlier case: {self.memo[name]!r}"[:2000])
        return self.memo[name]

    @property
    def factory(self):  # noqa: ANN201
        return get_sessionmaker(self.settings.resolved_database_url)

    @property
    def blobs(self):  # noqa: ANN201
        return self.settings.blob_store()

    def start_worker(self) -> GatedWorker:
        worker = GatedWorker(self.settings, self.gates, self.tmp / f"worker-{len(self.started)}.log")
        self.started.append(worker)
        worker.wait_ready()
        self.worker = worker
        return worker

    def kill_worker(self) -> None:
        """SIGKILL the whole worker (main process and task processes), then start a new one."""
        self.worker.kill_all()
        self.start_worker()

    def kill_task_process(self, pid: int) -> None:
        """SIGKILL the prefork process running a job; its worker lives on and forks a new one."""
        os.kill(pid, signal.SIGKILL)

    def new_pool(self, **config: Any) -> str:
        return create_pool(self.http, **{**CONFIG, **config})["id"]

    def start_round(self, pool_id: str, **params: Any) -> dict[str, Any]:
        return start_round(self.http, pool_id, [self.dataset_id], **{"budget": BUDGET, "seed": SEED, **params})

    def run_round(self, pool_id: str, status: str = "succeeded", timeout: float = 240, **params: Any) -> dict[str, Any]:
        return wait_round(self.http, self.start_round(pool_id, **params)["id"], timeout, status)

    @property
    def reference(self) -> dict[str, Any]:
        """The unfaulted round: its pool and `round_facts`."""
        def run() -> dict[str, Any]:
            pool_id = self.new_pool()
            body = self.run_round(pool_id)
            return {"pool_id": pool_id, "round": body, **round_facts(self, body["id"])}

        return self.once("reference", run)


def round_facts(rig: Rig, round_id: str) -> dict[str, Any]:
    """What a faulted round must share with the reference: the selection (its ordered rows,
    hashed), the pruning decision blob, and how many rows and jobs each table holds for it (a
    duplicate shows up as one more)."""
    with rig.factory() as s:
        rnd = s.get(Round, round_id)
        rows = s.execute(select(Selection.sample_id, Selection.cluster, Selection.expert, Selection.stratum,
                                Selection.score).where(Selection.round_id == round_id)
                         .order_by(Selection.sample_id)).all()
        scores, scored = s.execute(select(func.count(), func.count(func.distinct(Score.sample_id)))
                                   .where(Score.round_id == round_id)).one()
        shards = s.execute(select(FeatureShard.status, func.count(), func.sum(FeatureShard.rows))
                           .where(FeatureShard.round_id == round_id).group_by(FeatureShard.status)).all()
        members, distinct_members = s.execute(
            select(func.count(), func.count(func.distinct(PoolMember.sample_id))).where(PoolMember.pool_id == rnd.pool_id)
        ).one()
        return {
            "status": rnd.status,
            "selection_sha256": hashlib.sha256(json.dumps([list(r) for r in rows]).encode()).hexdigest(),
            "selected": len(rows),
            "decision_blob": s.scalar(select(RoundBlob.blob).where(RoundBlob.round_id == round_id,
                                                                    RoundBlob.kind == "decision")),
            "scores": (scores, scored),
            "shards": sorted((st, n, int(r or 0)) for st, n, r in shards),
            "pool_members": (members, distinct_members),
            "checkpoints": dict(Counter(s.scalars(select(Checkpoint.kind).where(Checkpoint.round_id == round_id)))),
            "index_versions": s.scalar(select(func.count()).select_from(IndexVersion)
                                       .where(IndexVersion.round_id == round_id)),
            "stage_jobs": dict(Counter(s.scalars(select(Job.kind).where(Job.parent_id == rnd.job_id)))),
        }


def assert_like_reference(rig: Rig, round_id: str, extra_jobs: dict[str, int] | None = None) -> dict[str, Any]:
    """The round ended as the reference did, row for row (stage jobs: plus `extra_jobs`)."""
    facts, ref = round_facts(rig, round_id), rig.reference
    expected_jobs = dict(ref["stage_jobs"])
    for kind, n in (extra_jobs or {}).items():
        expected_jobs[kind] += n
    assert {**facts, "stage_jobs": None} == {**{k: ref[k] for k in facts}, "stage_jobs": None}
    assert facts["stage_jobs"] == expected_jobs
    return facts


def job_events(rig: Rig, job_id: str) -> list[str]:
    with rig.factory() as s:
        return list(s.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    from fastapi.testclient import TestClient
    from pgtools import empty_pg_database

    from service.auth import create_api_key, create_owner
    from service.cli.admin import upgrade_database
    from service.db.session import get_engine, session_scope
    from service.main import create_app

    tmp = tmp_path_factory.mktemp("faults")
    with ExitStack() as stack:
        redis = RedisServer(tmp / "redis")
        redis.start()
        stack.callback(redis.kill)
        url = stack.enter_context(empty_pg_database("adaptinf_faults"))
        upgrade_database(url)
        tmpfs_skip = None
        try:
            stack.enter_context(small_tmpfs(tmp / "data", TMPFS_SIZE))
        except pytest.skip.Exception as exc:  # not root: every case but the full disk still runs
            tmpfs_skip = str(exc)
        # A short lease, heartbeat and reaper period: a lost worker is noticed within ~2.5 s, a lost
        # message re-sent after 8 s (workers.reaper.lost_message_grace).
        settings = Settings(data_dir=tmp / "data", database_url=url, broker_url=redis.url, lease_seconds=2,
                            heartbeat_seconds=0.5, reaper_interval_seconds=0.5, max_attempts=3, min_free_disk_mb=8)
        (tmp / "gates").mkdir()
        rig = Rig(tmp, settings, redis, Gates(tmp / "gates"), tmpfs_skip=tmpfs_skip)
        stack.callback(lambda: [w.kill_all() for w in rig.started])  # nothing of theirs to keep
        stack.callback(get_engine(url).dispose)  # before the tmpfs unmounts and the database drops
        with session_scope(url) as session:
            _, key = create_api_key(session, create_owner(session, "faults"))
        rig.http = stack.enter_context(TestClient(create_app(settings)))
        rig.http.headers["Authorization"] = f"Bearer {key}"
        rig.start_worker()
        rig.dataset_id = upload_ready(rig.http, tmp / "d", SAMPLES)
        yield rig
