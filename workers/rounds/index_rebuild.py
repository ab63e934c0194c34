"""Rebuilding a pool's index version from its round's stored feature shards (job `index.rebuild`).

The version is loaded through the engine's `load_index`, which checks its blob's size and sha256
and, when it fails them, rebuilds it from the rows this module reads: every feature shard of the
round (sha256 checked) in candidate order, minus the samples the round pruned (its decision
blob; the members pruned in the round for rounds from before round_blobs), exactly the rows the select stage indexed, with the round's seed. A rebuild that gives
another row count than SQL recorded is refused. The new blob and sha go to index_versions (and
round_blobs) in one transaction; an intact version changes nothing, so the job is idempotent.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.blobs import BlobNotFound, BlobStore
from service.db.models import FeatureShard, IndexVersion, PoolMember, Round
from service.pool_index import SOURCE_DAMAGED
from service.round_blobs import record_round_blobs, round_blob
from workers.engine.feature_file import FeatureFileWriter, FileRows
from workers.engine.index import IndexVersion as EngineVersion
from workers.engine.index import load_index

Fence = Callable[[Session], None]


class IndexSourceDamaged(Exception):
    """The round's feature shards or pruning decision cannot give the version's rows back."""

    code = SOURCE_DAMAGED


def _pruned(session: Session, blobs: BlobStore, decision_sha: str | None, rnd: Round) -> np.ndarray:
    """The sample ids the round pruned: its select stage's decision blob; for a round stored before
    round_blobs named that blob (its sha was in no typed column), the members pruned in the round."""
    if decision_sha is None:
        return np.array(sorted(session.scalars(select(PoolMember.sample_id).where(
            PoolMember.pool_id == rnd.pool_id, PoolMember.pruned_round == rnd.number))), dtype=np.int64)
    if not blobs.verify(decision_sha):
        raise IndexSourceDamaged(f"round {rnd.id}: its pruning decision blob {decision_sha} is missing or corrupt")
    with blobs.open(decision_sha) as f:
        return np.array([p["sample_id"] for p in json.loads(f.read())["pruned"]], dtype=np.int64)


def _shard_array(blobs: BlobStore, shard: FeatureShard, name: str) -> np.ndarray:
    """One array of a shard's .npz (np.load reads only that member).

    Only a missing blob or content numpy cannot read is damage (the job then fails for good, and
    the API answers index_unrecoverable). Any other OSError propagates: an unreachable store
    (BlobStoreUnavailable, a ConnectionError) makes the job retry, a full disk fails it as
    disk_full, and either way a later request queues a new rebuild.
    """
    try:
        with np.load(blobs.materialize(shard.blob), allow_pickle=False) as z:
            return z[name]
    except (BlobNotFound, zipfile.BadZipFile, KeyError, EOFError, ValueError) as exc:
        raise IndexSourceDamaged(f"feature shard {shard.shard} of round {shard.round_id} cannot be read: {exc}") from exc


def read_survivors(blobs: BlobStore, shards: list[FeatureShard], pruned: np.ndarray,
                   workdir: Path) -> tuple[np.ndarray, FileRows]:
    """(ids int64[m], features float16[m, d] as FileRows in `workdir`): the shards' rows in shard
    order without `pruned`, written shard by shard (never all of them in memory at once)."""
    keeps, kept_ids = [], []
    for shard in shards:  # check every blob and count the kept rows before writing any
        if shard.status != "done" or shard.blob is None or not blobs.verify(shard.blob):
            raise IndexSourceDamaged(f"feature shard {shard.shard} of round {shard.round_id} (blob {shard.blob}) "
                                     f"is missing, corrupt or unfinished")
        ids = _shard_array(blobs, shard, "ids")
        keeps.append(~np.isin(ids, pruned))
        kept_ids.append(ids[keeps[-1]])
    if not shards:
        raise IndexSourceDamaged("the round has no feature shards")
    ids = np.concatenate(kept_ids).astype(np.int64)
    writer: FeatureFileWriter | None = None
    try:
        for shard, keep in zip(shards, keeps):
            features = _shard_array(blobs, shard, "features")
            if writer is None:
                writer = FeatureFileWriter(workdir / "survivors.npy", (len(ids), features.shape[1]))
            writer.write(features[keep])
    finally:
        if writer is not None:
            writer.close()
    return ids, FileRows(workdir / "survivors.npy")


def rebuild_index_version(factory: sessionmaker[Session], blobs: BlobStore, work_dir: Path, version_id: str,
                          *, fence: Fence | None = None) -> dict[str, Any]:
    """Load index version `version_id`, rebuilding it from its round's shards when its blob is
    damaged, and record a rebuilt blob in SQL. `fence(session)` proves the caller's lease inside
    the recording transaction. Returns what happened (the job's result)."""
    with factory() as session:
        row = session.get(IndexVersion, version_id)
        if row is None:
            return {"index_version_id": version_id, "rebuilt": False, "reason": "the version no longer exists"}
        rnd = session.get(Round, row.round_id)
        shards = list(session.scalars(select(FeatureShard).where(FeatureShard.round_id == rnd.id)
                                      .order_by(FeatureShard.shard)))
        decision = round_blob(session, rnd.id, "decision")
        seed = int((rnd.params or {}).get("seed", 0))
        version = EngineVersion(row.sha256, row.size_bytes, row.ntotal, row.kind, rnd.number, row.dim)
        session.expunge_all()
    work_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"index-rebuild-{version_id}-", dir=work_dir))
    rebuilt: list[EngineVersion] = []
    with contextlib.ExitStack() as opened:
        opened.callback(shutil.rmtree, workdir, True)

        def rebuild() -> tuple[np.ndarray, FileRows]:
            with factory() as session:
                pruned = _pruned(session, blobs, decision, rnd)
            ids, features = read_survivors(blobs, shards, pruned, workdir)
            opened.callback(features.close)
            return ids, features

        # read back (mmap) whether rebuilt or not: proves FAISS loads what the API will serve
        ntotal = int(load_index(blobs, version, rebuild, rebuilt.append, workdir=workdir, seed=seed).ntotal)
    if not rebuilt:
        return {"index_version_id": version_id, "rebuilt": False, "sha256": version.sha256, "ntotal": ntotal}
    new = rebuilt[0]
    with factory() as session, session.begin():
        if fence is not None:
            fence(session)
        row = session.get(IndexVersion, version_id)
        if row is not None:  # else its pool was deleted meanwhile: the new blob is left to gc
            row.blob, row.sha256, row.size_bytes = new.sha256, new.sha256, new.size_bytes
            row.kind, row.dim = new.kind, new.dim
            record_round_blobs(session, row.round_id, index=new.sha256)
    return {"index_version_id": version_id, "rebuilt": True, "sha256": new.sha256, "previous_sha256": version.sha256,
            "ntotal": new.ntotal}
