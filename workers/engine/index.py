"""The persistent pool index: one FAISS index per pool, a new version per round (for pools
whose config sets `pool_index`), stored as a blob.

Vectors are the L2-normalised features stored as fp16 (the features are fp16 already, so this
loses nothing beyond the normalisation's rounding), searched by inner product (= cosine); the
FAISS ids are the SQL sample ids. A version is written to a file in the caller's work folder and
put in the blob store, which makes it durable and atomic (temp file, fsync, rename) and names it
by its sha256; SQL records that sha and the size, both checked on every load, and a missing or
corrupt blob is rebuilt from the stored feature shards. Versions are immutable and
content-addressed, so two writers never share a file and need no lock.
"""
from __future__ import annotations

import math
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.blobs import BlobNotFound, BlobStore

# Past this many rows the index is IVF instead of flat. Measured on the 2-core dev machine at
# 1024 dims: a flat fp16 index of 50k rows answers a query in ~3.5 ms (1.7 ms batched), exact and
# with no training, and the cost grows linearly from there (~70 ms at 1M); IVF (nlist = √n,
# 16 lists probed) builds 200k rows in ~3 s and answers in under a millisecond.
FLAT_MAX_ROWS = 50_000
IVF_NPROBE = 16
_ADD_BLOCK = 65_536

IndexKind = Literal["flat", "ivf"]
Rebuild = Callable[[], tuple[np.ndarray, np.ndarray]]


class IndexRowsMismatch(ValueError):
    """A rebuilt index does not hold the number of rows SQL recorded for its version."""

    code = "index_source_damaged"


@dataclass(frozen=True)
class IndexVersion:
    """One stored index version, as recorded in SQL (index_versions): its blob and shape."""

    sha256: str
    size_bytes: int
    ntotal: int
    kind: IndexKind
    round_no: int
    dim: int | None


def index_kind(n: int) -> IndexKind:
    return "flat" if n <= FLAT_MAX_ROWS else "ivf"


def build_index(ids: np.ndarray, features: np.ndarray, seed: int = 0):
    """An in-memory FAISS index of the normalised features with `ids` as its ids.

    Args:
        ids: int64[n] SQL sample ids. features: [n, d] float16/float32 (array, memmap or `FileRows`).
    """
    import faiss

    from workers.engine.selection.vectors import gather_normalized, iter_normalized_blocks

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    n, d = features.shape
    if len(ids) != n:
        raise ValueError(f"ids ({len(ids)}) and features ({n}) differ in length")
    fp16 = faiss.ScalarQuantizer.QT_fp16
    if index_kind(n) == "flat":
        index = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(d, fp16, faiss.METRIC_INNER_PRODUCT))
    else:
        nlist = int(min(4096, max(64, math.isqrt(n))))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, fp16, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed % 2**31  # FAISS takes a C int seed
        index.cp.niter = 10
        rng = np.random.default_rng([seed, n])
        sample = np.sort(rng.choice(n, size=min(n, 40 * nlist), replace=False))  # FAISS wants >= 39 per list
        index.train(gather_normalized(features, sample))
        index.nprobe = IVF_NPROBE
    for start, block in iter_normalized_blocks(features, _ADD_BLOCK):
        index.add_with_ids(block, ids[start : start + len(block)])
    return index


def store_index_version(blobs: BlobStore, workdir: Path | str, round_no: int, ids: np.ndarray,
                        features: np.ndarray, *, seed: int = 0) -> IndexVersion:
    """Build the pool's index for `round_no` and put it in the blob store.

    Args:
        blobs: where the version goes (its sha256 names it).
        workdir: a local folder for the file while it is written (the store then takes it).
        round_no: the round this version belongs to.
        ids: int64[n] SQL sample ids (the pool's active members).
        features: [n, d] float16 features (array, memmap or `FileRows` over the concatenated shards).
        seed: seeds the IVF training subsample and k-means.
    """
    import faiss

    index = build_index(ids, features, seed)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=workdir, prefix=f"index-r{round_no}-", suffix=".faiss")
    os.close(fd)
    try:
        faiss.write_index(index, name)
        ref = blobs.put_file(name, move=True)
    finally:
        Path(name).unlink(missing_ok=True)
    return IndexVersion(ref.sha256, ref.size, int(index.ntotal), index_kind(len(ids)), round_no, int(features.shape[1]))


def _read_mmap(blobs: BlobStore, version: IndexVersion):
    import faiss

    # Flat codes map zero-copy with IO_FLAG_MMAP_IFC; IVF lists map with IO_FLAG_MMAP (the two
    # flags cannot be combined on IVF files).
    flag = faiss.IO_FLAG_MMAP_IFC if version.kind == "flat" else faiss.IO_FLAG_MMAP
    index = faiss.read_index(str(blobs.materialize(version.sha256)), flag)
    if version.kind == "ivf":
        index.nprobe = IVF_NPROBE
    return index


def is_intact(blobs: BlobStore, version: IndexVersion) -> bool:
    """Whether the version's blob exists with the recorded size and sha256."""
    try:
        return blobs.size(version.sha256) == version.size_bytes and blobs.verify(version.sha256)
    except BlobNotFound:
        return False


def load_index(blobs: BlobStore, version: IndexVersion, rebuild: Rebuild,
               on_rebuilt: Callable[[IndexVersion], None] | None = None, *, workdir: Path | str, seed: int = 0):
    """The version's FAISS index, read with mmap, after checking size and sha256.

    A missing or corrupt blob is rebuilt from `rebuild()` (ids, features from the stored shards)
    with the round's `seed` and put in the store again (the same rows give the same bytes, so
    usually the same blob, whose damaged file the put replaces); IndexRowsMismatch when the
    rebuild does not give the recorded number of rows. `on_rebuilt` gets the new IndexVersion
    (its sha256 may differ from the recorded one) so the caller can update SQL.
    """
    if not is_intact(blobs, version):
        ids, features = rebuild()
        new = store_index_version(blobs, workdir, version.round_no, ids, features, seed=seed)
        if new.ntotal != version.ntotal:
            raise IndexRowsMismatch(f"the rebuilt index of round {version.round_no} has {new.ntotal} rows; "
                                    f"SQL recorded {version.ntotal}")
        if on_rebuilt is not None:
            on_rebuilt(new)
        version = new
    return _read_mmap(blobs, version)


class PoolIndex(ABC):
    """What callers see of a pool's vector index: cosine k-NN over its active samples."""

    @property
    @abstractmethod
    def ntotal(self) -> int: ...

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Args: queries [m, d] float16/32 (normalised here). Returns (cosine float32[m, k],
        sample ids int64[m, k]; −1 where fewer than k exist)."""


class FaissPoolIndex(PoolIndex):
    """PoolIndex over one FAISS index version."""

    def __init__(self, index, version: IndexVersion) -> None:
        self._index, self.version = index, version

    @classmethod
    def open(cls, blobs: BlobStore, version: IndexVersion, rebuild: Rebuild,
             on_rebuilt: Callable[[IndexVersion], None] | None = None, *, workdir: Path | str,
             seed: int = 0) -> FaissPoolIndex:
        holder: list[IndexVersion] = [version]

        def record(new: IndexVersion) -> None:
            holder[0] = new
            if on_rebuilt is not None:
                on_rebuilt(new)

        index = load_index(blobs, version, rebuild, record, workdir=workdir, seed=seed)
        return cls(index, holder[0])

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from workers.engine.selection.vectors import normalize_rows

        sims, ids = self._index.search(normalize_rows(np.atleast_2d(queries)), k)
        return sims, ids
