"""FAISS on the GPU at pool scale: spherical k-means and exact inner-product search. One JSON line.

1M × 1,024 float32 unit rows (4 GB; random, as the cost does not depend on the values), k-means
with `--clusters` centroids and `--niter` Lloyd iterations (the engine's `faiss.Kmeans(...,
spherical=True, gpu=...)` call), then a flat inner-product index on the GPU searched by
`--queries` rows for their 10 nearest. The same search on the CPU over a `--cpu-rows` slice gives
a per-row baseline. Prints {"faiss_gpu": false, "reason": ...} where FAISS has no GPU.

Usage: python bench/faiss_gpu.py [--rows 1000000] [--dim 1024] [--clusters 1000] [--niter 20]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--cpu-rows", type=int, default=100_000)
    args = ap.parse_args()

    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if gpus == 0:
        print(json.dumps({"faiss_gpu": False, "reason": f"faiss {faiss.__version__} sees no GPU (faiss-cpu build)"}))
        return
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    start = time.perf_counter()
    km = faiss.Kmeans(args.dim, args.clusters, niter=args.niter, seed=0, spherical=True, gpu=True, verbose=False,
                      max_points_per_centroid=-(-args.rows // args.clusters))
    km.train(x)
    kmeans_s = time.perf_counter() - start

    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(res, args.dim)
    start = time.perf_counter()
    index.add(x)
    add_s = time.perf_counter() - start
    queries = x[: args.queries]
    start = time.perf_counter()
    _, ids = index.search(queries, 10)
    search_s = time.perf_counter() - start

    cpu = faiss.IndexFlatIP(args.dim)
    cpu.add(x[: args.cpu_rows])
    start = time.perf_counter()
    cpu.search(queries[:1000], 10)
    cpu_s = time.perf_counter() - start
    print(json.dumps({
        "faiss_gpu": True, "gpus": gpus, "rows": args.rows, "dim": args.dim, "clusters": args.clusters,
        "niter": args.niter, "kmeans_s": round(kmeans_s, 2), "add_s": round(add_s, 2),
        "search_s": round(search_s, 3), "queries": args.queries,
        "search_queries_per_s": round(args.queries / search_s, 1),
        "self_match_rate": float((ids[:, 0] == np.arange(args.queries)).mean()),
        # CPU: 1,000 queries over cpu_rows, scaled to queries/s over the full rows (flat search is linear in rows)
        "cpu_search_queries_per_s_scaled": round(1000 / cpu_s * args.cpu_rows / args.rows, 1),
        "faiss_version": faiss.__version__,
    }))


if __name__ == "__main__":
    main()
