"""A pool's stored index version as a round with `pool_index` leaves it: feature shards, the
pruning decision and the FAISS version in the blob store, with their typed rows (feature_shards,
round_blobs, index_versions). For the index download and rebuild tests, without a model."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.blobs import BlobStore
from service.db.models import FeatureShard, IndexVersion, RoundBlob
from service.db.session import session_scope

DIM = 16


@dataclass(frozen=True)
class StoredIndex:
    version_id: str
    sha256: str
    ids: np.ndarray  # every candidate, in shard order
    features: np.ndarray  # float16[n, DIM]
    survivors: np.ndarray  # the ids the index holds (candidates minus pruned)


def store_index(database_url: str, blobs: BlobStore, work_dir: Path, pool_id: str, round_id: str, round_no: int,
                *, n: int = 30, shard_size: int = 12, pruned: tuple[int, ...] = (1, 7), seed: int = 0) -> StoredIndex:
    """Shards of `n` candidates (ids 1000 + k), a decision pruning the candidates at positions
    `pruned`, and the index version over the rest, stored as the select stage stores it."""
    from workers.engine.features import SCORE_NAMES
    from workers.engine.features.config import FeatureBatch
    from workers.engine.features.shards import write_shard
    from workers.engine.index import store_index_version

    rng = np.random.default_rng(round_no)
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    features = rng.normal(size=(n, DIM)).astype(np.float16)
    gone = ids[list(pruned)]
    work_dir.mkdir(parents=True, exist_ok=True)
    with session_scope(database_url) as session:
        for k, start in enumerate(range(0, n, shard_size)):
            rows = slice(start, min(n, start + shard_size))
            batch = FeatureBatch(ids[rows], features[rows], {s: np.zeros(len(ids[rows]), np.float32) for s in SCORE_NAMES})
            path = work_dir / f"shard-{round_id}-{k}.npz"
            write_shard(path, batch, {"config": {}, "adapter_sha": None})
            ref = blobs.put_file(path, move=True)
            session.add(FeatureShard(round_id=round_id, shard=k, status="done", blob=ref.sha256, rows=len(ids[rows])))
        decision = {"assign": [0] * n, "pruned": [{"sample_id": int(s), "cluster": 0, "reason": "near_duplicate"}
                                                  for s in gone]}
        session.add(RoundBlob(round_id=round_id, kind="decision", blob=blobs.put_bytes(json.dumps(decision).encode()).sha256))
        keep = ~np.isin(ids, gone)
        v = store_index_version(blobs, work_dir, round_no, ids[keep], features[keep], seed=seed)
        session.add(RoundBlob(round_id=round_id, kind="index", blob=v.sha256))
        row = IndexVersion(pool_id=pool_id, round_id=round_id, blob=v.sha256, sha256=v.sha256, size_bytes=v.size_bytes,
                           ntotal=v.ntotal, kind=v.kind, dim=v.dim)
        session.add(row)
        session.flush()
        return StoredIndex(row.id, v.sha256, ids, features, ids[keep])


def corrupt_blob(blobs: BlobStore, sha: str) -> None:
    """Overwrite a stored blob's bytes in place (the local store keeps blobs read-only)."""
    import os

    path = blobs.materialize(sha)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
