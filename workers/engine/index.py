"""The persistent pool index: one FAISS index per pool, a new file version per round (for pools
whose config sets `pool_index`).

Vectors are the L2-normalised features stored as fp16 (the features are fp16 already, so this
loses nothing beyond the normalisation's rounding), searched by inner product (= cosine); the
FAISS ids are the SQL sample ids. A version is written to a temp file, fsynced and renamed under
a per-directory writer lock, so a crash mid-write leaves the previous version untouched; its
sha256 and size go to SQL and are checked on every load, and a missing or corrupt file is
rebuilt from the stored feature shards.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from core.files import file_sha256, fsync_dir

# Past this many rows the index is IVF instead of flat. Measured on the 2-core dev machine at
# 1024 dims: a flat fp16 index of 50k rows answers a query in ~3.5 ms (1.7 ms batched), exact and
# with no training, and the cost grows linearly from there (~70 ms at 1M); IVF (nlist = √n,
# 16 lists probed) builds 200k rows in ~3 s and answers in under a millisecond.
FLAT_MAX_ROWS = 50_000
IVF_NPROBE = 16
_ADD_BLOCK = 65_536
_LOCK_NAME = ".writer.lock"

IndexKind = Literal["flat", "ivf"]
Rebuild = Callable[[], tuple[np.ndarray, np.ndarray]]


class IndexBusyError(RuntimeError):
    """Another process holds the pool's writer lock."""


@dataclass(frozen=True)
class IndexVersion:
    """One written index file, as recorded in SQL (index_versions)."""

    path: Path
    sha256: str
    size_bytes: int
    ntotal: int
    kind: IndexKind
    round_no: int
    dim: int


def index_kind(n: int) -> IndexKind:
    return "flat" if n <= FLAT_MAX_ROWS else "ivf"


@contextlib.contextmanager
def writer_lock(directory: Path, timeout_s: float = 600.0) -> Iterator[None]:
    """Exclusive per-pool writer lock (flock: released by the kernel if the holder dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK_NAME, "a+b") as f:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise IndexBusyError(f"index directory {directory} is locked by another writer") from e
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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


def _write_atomically(index, path: Path) -> tuple[str, int]:
    """temp file → fsync → rename → fsync dir; returns (sha256, size) of what was written."""
    import faiss

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        sha, size = file_sha256(tmp), tmp.stat().st_size
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent, strict=True)
    return sha, size


def version_path(directory: Path, round_no: int) -> Path:
    return Path(directory) / f"pool-index-r{round_no:06d}.faiss"


def write_index_version(directory: Path | str, round_no: int, ids: np.ndarray, features: np.ndarray,
                        *, seed: int = 0, path: Path | None = None, lock_timeout_s: float = 600.0) -> IndexVersion:
    """Build and durably write the pool's index for `round_no` (single writer per directory).

    Args:
        directory: the pool's index directory.
        round_no: the round this version belongs to.
        ids: int64[n] SQL sample ids (the pool's active members).
        features: [n, d] float16 features (array, memmap or `FileRows` over the concatenated shards).
        seed: seeds the IVF training subsample and k-means.
        path: write here instead of the round's default file name (used by rebuilds).
        lock_timeout_s: how long to wait for another writer before IndexBusyError.
    """
    directory = Path(directory)
    with writer_lock(directory, lock_timeout_s):
        for stale in directory.glob(".*.tmp-*"):  # leftovers of a writer that crashed
            stale.unlink(missing_ok=True)
        index = build_index(ids, features, seed)
        target = path or version_path(directory, round_no)
        sha, size = _write_atomically(index, target)
    return IndexVersion(target, sha, size, int(index.ntotal), index_kind(len(ids)), round_no, features.shape[1])


def _read_mmap(version: IndexVersion):
    import faiss

    # Flat codes map zero-copy with IO_FLAG_MMAP_IFC; IVF lists map with IO_FLAG_MMAP (the two
    # flags cannot be combined on IVF files).
    flag = faiss.IO_FLAG_MMAP_IFC if version.kind == "flat" else faiss.IO_FLAG_MMAP
    index = faiss.read_index(str(version.path), flag)
    if version.kind == "ivf":
        index.nprobe = IVF_NPROBE
    return index


def is_intact(version: IndexVersion) -> bool:
    p = Path(version.path)
    return p.is_file() and p.stat().st_size == version.size_bytes and file_sha256(p) == version.sha256


def load_index(version: IndexVersion, rebuild: Rebuild, on_rebuilt: Callable[[IndexVersion], None] | None = None):
    """The version's FAISS index, read with mmap, after checking size and sha256.

    A missing or corrupt file is rebuilt from `rebuild()` (ids, features from the stored shards)
    and rewritten at the same path; `on_rebuilt` gets the new IndexVersion (its sha256 may differ
    from the recorded one) so the caller can update SQL.
    """
    if not is_intact(version):
        ids, features = rebuild()
        new = write_index_version(Path(version.path).parent, version.round_no, ids, features, path=Path(version.path))
        if new.ntotal != version.ntotal:
            raise ValueError(f"rebuilt index of round {version.round_no} has {new.ntotal} rows, SQL recorded {version.ntotal}")
        if on_rebuilt is not None:
            on_rebuilt(new)
        version = new
    return _read_mmap(version)


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
    def open(cls, version: IndexVersion, rebuild: Rebuild, on_rebuilt: Callable[[IndexVersion], None] | None = None) -> FaissPoolIndex:
        holder: list[IndexVersion] = [version]

        def record(new: IndexVersion) -> None:
            holder[0] = new
            if on_rebuilt is not None:
                on_rebuilt(new)

        index = load_index(version, rebuild, record)
        return cls(index, holder[0])

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from workers.engine.selection.vectors import normalize_rows

        sims, ids = self._index.search(normalize_rows(np.atleast_2d(queries)), k)
        return sims, ids
