"""How the selection engine uses cores: single-threaded kernels, parallel work units.

The engine's GEMMs are small (a few hundred rows per block), where BLAS/OpenMP threads mostly
synchronise, and on a shared machine their spinning collapses: on the 2-core dev box under a
load of ~5, pruning 300k rows took 83 s with 2 BLAS/OpenMP threads and 14 s with 1. So kernels
run with one thread and parallelism comes from independent units (clusters, row blocks) on a
thread pool; NumPy and FAISS release the GIL inside them.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))


def resolve_threads(threads: int | None) -> int:
    return DEFAULT_THREADS if threads is None else threads


@contextlib.contextmanager
def single_threaded_kernels() -> Iterator[None]:
    """BLAS (NumPy's and FAISS's), FAISS's OpenMP and torch (used for float16 conversion)
    limited to one thread inside the block."""
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    before, before_torch = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        faiss.omp_set_num_threads(before)
        torch.set_num_threads(before_torch)


def _faiss_omp_threads() -> int | None:
    faiss = sys.modules.get("faiss")
    return None if faiss is None else faiss.omp_get_max_threads()


def _inherit_openmp_threads(faiss_threads: int | None) -> None:
    """OpenMP's thread count is a per-thread setting: a fresh pool thread starts at the
    process default (all cores), whatever `single_threaded_kernels` set in the caller. Without
    this, every FAISS call in a pool thread ran 2 OpenMP threads on the 2-core box, 4 spinning
    threads on 2 cores (torch and OpenBLAS keep process-wide settings)."""
    if faiss_threads is not None:
        sys.modules["faiss"].omp_set_num_threads(faiss_threads)


def map_parallel(fn: Callable[[T], R], items: Iterable[T], threads: int | None) -> Iterator[R]:
    """fn over items on `threads` threads, results in input order (lazily, so a caller can
    consume results one by one and keep memory bounded by the pool size)."""
    n = resolve_threads(threads)
    items = list(items)
    if n <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(max_workers=n, initializer=_inherit_openmp_threads, initargs=(_faiss_omp_threads(),)) as pool:
        # At most 2·n units in flight: each holds a cluster's float32 rows.
        pending = []
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * n:
                break
        done = object()
        while pending:
            yield pending.pop(0).result()
            nxt = next(it, done)
            if nxt is not done:
                pending.append(pool.submit(fn, nxt))
