"""Selection + pruning benchmark: ours against the paper's released approach, and our scaling.

Prints one JSON line. Synthetic 1,024-dim float16 gradient-like features (10 skills × 50 topics,
10% planted near-duplicates of earlier rows) live in one memmap; every pool size is a prefix of
it. Each measurement runs in its own subprocess so its peak RSS (VmHWM, which counts the
memmapped pages it touched) is its own, and every run first reads its rows' bytes (untimed) so
the features are in the page cache, as after the feature stage. The round is: cluster (k=10),
select B = 10% with adapt-inf (expert by entropy, CCS), prune to a pool cap of 80% (dedup, then
most redundant). Times are the best of 3 runs at 50k, 2 at 100k/300k/1M and 1 at 200k (noise on
a shared machine only adds time; the growth exponent rests on the 1M figure).

    python bench/selection.py                 # full run (minutes; 1M rows needs ~3 GB of disk)
    python bench/selection.py --quick         # small sizes, for a smoke test
    python bench/selection.py --one-cluster   # also recall in ONE cluster of 300k rows (+25 min)

Dedup recall (`dedup_recall_100k`, `dedup_recall_300k`) is the share of the near-duplicates an
exhaustive search prunes that ours prunes too, on the pools of 100k and 300k rows (10 clusters of
about 10k and 30k rows); `--one-cluster` adds `dedup_recall_300k_one_cluster`, with every row of
the 300k pool in one cluster (its exhaustive search alone takes about 23 minutes here).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.registry import EXPERTS  # noqa: E402

D = 1024


def make_pool(directory: Path, n: int, seed: int = 0) -> None:
    """Write features.f16 ([n, D] float16 memmap) and scores.npz, in blocks."""
    rng = np.random.default_rng(seed)
    skills = rng.normal(size=(10, D)).astype(np.float32)
    skills /= np.linalg.norm(skills, axis=1, keepdims=True)
    topics = (0.7 / math.sqrt(D)) * rng.normal(size=(10, 50, D)).astype(np.float32)
    x = np.memmap(directory / "features.f16", dtype=np.float16, mode="w+", shape=(n, D))
    block = 65_536
    for start in range(0, n, block):
        m = min(block, n - start)
        s, t = rng.integers(0, 10, m), rng.integers(0, 50, m)
        rows = skills[s] + topics[s, t] + (0.6 / math.sqrt(D)) * rng.standard_normal((m, D), dtype=np.float32)
        x[start : start + m] = rows.astype(np.float16)
        # ~10% near-duplicates (cosine ≈ 0.977-0.997) of strictly earlier rows, so every prefix
        # of the file is a valid pool.
        dup = np.flatnonzero(rng.uniform(size=m) < 0.10)
        dup = dup[start + dup > 0]
        src = (rng.uniform(size=len(dup)) * (start + dup)).astype(np.int64)
        noise = rng.choice([0.1, 0.2, 0.3], size=(len(dup), 1)).astype(np.float32) / math.sqrt(D)
        order = np.argsort(src)
        copies = np.empty((len(dup), D), dtype=np.float32)
        copies[order] = np.asarray(x[src[order]], dtype=np.float32)
        x[start + dup] = (copies + noise * rng.standard_normal((len(dup), D), dtype=np.float32)).astype(np.float16)
    x.flush()
    scores = {
        "ppl": rng.lognormal(1.0, 0.6, n), "el2n": rng.beta(2, 5, n), "entropy": rng.gamma(3.0, 0.5, n),
        "grand": rng.exponential(2.0, n) * 100.0, "ig": rng.normal(1.0, 0.2, n),
    }
    scores["ig"][rng.uniform(size=n) < 0.3] = np.nan  # text-only samples
    np.savez(directory / "scores.npz", **{k: v.astype(np.float32) for k, v in scores.items()})


def warm_page_cache(directory: Path, n: int) -> None:
    """Read the first n rows' bytes through plain file reads (untimed), so every timed run
    starts with its features in the page cache, as a worker finds them right after the feature
    stage wrote them. Without it, a run after the reference's 13 GB at 200k read the 1M pool
    back from disk inside its timed region (2.2 s of clustering instead of 0.6 s). File reads
    do not map pages into the process, so peak RSS is unaffected."""
    buf = bytearray(1 << 24)
    left = n * D * 2
    with open(directory / "features.f16", "rb", buffering=0) as f:
        while left > 0:
            got = f.readinto(memoryview(buf)[: min(len(buf), left)])
            if not got:
                break
            left -= got


def load(directory: Path, n: int):
    total = (directory / "features.f16").stat().st_size // (2 * D)
    x = np.memmap(directory / "features.f16", dtype=np.float16, mode="r", shape=(total, D))[:n]
    with np.load(directory / "scores.npz") as z:
        scores = {k: z[k][:n].copy() for k in EXPERTS}
    return x, scores


def peak_rss_gb() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss it starts afresh at exec, so the
    parent's memory (it wrote the memmap) does not leak into the figure."""
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kb / 2**20


def child_ours(directory: Path, n: int, threads: int, exact: bool, one_cluster: bool = False) -> dict:
    from workers.engine.pruning import PruneConfig, prune_pool
    from workers.engine.selection import SelectionConfig, cluster_features, select_samples

    # Imported by the engine (FAISS, and torch for float16 conversion), as a worker process has
    # them loaded: outside the timed region, like scikit-learn for the reference.
    import faiss  # noqa: F401
    import torch  # noqa: F401

    warm_page_cache(directory, n)
    x, scores = load(directory, n)
    ids = np.arange(n, dtype=np.int64) + 1
    cfg = SelectionConfig(n_clusters=10, threads=threads)
    t0 = time.perf_counter()
    clustering = cluster_features(x, 10, seed=0, threads=threads)
    if one_cluster:  # every row in one cluster (k-means still runs, so its time is measured as usual)
        clustering = type(clustering)(np.zeros(n, dtype=np.int64), clustering.centroids[:1])
    t1 = time.perf_counter()
    result = select_samples(ids, x, scores, "adapt-inf", 0.10, cfg, seed=0, clustering=clustering)
    t2 = time.perf_counter()
    prune_cfg = PruneConfig(max_pool_size=int(0.8 * n), exact_max=n if exact else PruneConfig().exact_max, threads=threads)
    pruned = prune_pool(ids, x, clustering, prune_cfg)
    t3 = time.perf_counter()
    dups = sorted(p.sample_id for p in pruned if p.reason == "near_duplicate")
    if exact:
        np.save(directory / f"exact_dups_{n}{'_one' if one_cluster else ''}.npy", np.asarray(dups, dtype=np.int64))
    return {
        "seconds": t3 - t0, "cluster_s": t1 - t0, "select_s": t2 - t1, "prune_s": t3 - t2,
        "peak_rss_gb": peak_rss_gb(),
        "selected_per_cluster": [c.selected for c in result.clusters],
        "pruned_near_duplicate": len(dups), "pruned_pool_cap": len(pruned) - len(dups),
        "kept_per_cluster": (clustering.sizes() - np.bincount([p.cluster for p in pruned],
                                                              minlength=clustering.n_clusters)).tolist(),
        "dups": dups if not exact else None,
    }


def child_reference(directory: Path, n: int) -> dict:
    import sklearn.cluster  # noqa: F401  imports stay outside the timed region, as for ours
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from reference_selection import run_reference

    torch.set_num_threads(2)
    warm_page_cache(directory, n)
    x, scores = load(directory, n)
    t0 = time.perf_counter()
    out = run_reference(np.asarray(x), scores, budget=int(0.1 * n), keep=int(0.8 * n))
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def in_child(*args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def best_of(repeats: int, *args: str) -> dict:
    """The fastest of `repeats` runs (the cores are shared, so noise only ever adds time); peak
    RSS is the largest seen."""
    runs = [in_child(*args) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    return dict(best, peak_rss_gb=max(r["peak_rss_gb"] for r in runs), runs_seconds=[round(r["seconds"], 2) for r in runs])


def recall(directory: Path, n: int, ours: list[int], kind: str = "exact") -> tuple[float, int]:
    """Share of the exhaustive search's near-duplicates that ours pruned too, and their count."""
    in_child(kind, str(directory), str(n))
    exact = set(np.load(directory / f"exact_dups_{n}{'_one' if kind.endswith('one') else ''}.npy").tolist())
    return round(len(exact & set(ours)) / max(1, len(exact)), 5), len(exact)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--one-cluster", action="store_true", help="also measure recall in one cluster of 300k rows")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, directory, n = args.child[0], Path(args.child[1]), int(args.child[2])
        out = (child_reference(directory, n) if kind == "reference" else
               child_ours(directory, n, args.threads, kind.startswith("exact"), kind.endswith("one")))
        print(json.dumps(out))
        return

    compare = (5_000, 20_000) if args.quick else (50_000, 200_000)
    scale = (10_000, 30_000, 100_000) if args.quick else (100_000, 300_000, 1_000_000)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        directory = Path(tmp)
        t = time.perf_counter()
        make_pool(directory, max(scale + compare))
        log(f"pool written in {time.perf_counter() - t:.0f}s")
        report: dict = {"quick": args.quick, "compare_sizes": list(compare), "load_avg_start": os.getloadavg()[0],
                        "threads": args.threads, "dim": D, "cpu_count": os.cpu_count()}
        for n, key, repeats in zip(compare, ("50k", "200k"), (3, 1)):
            ref = best_of(repeats, "reference", str(directory), str(n))
            ours = best_of(repeats, "ours", str(directory), str(n))
            log(f"{n}: reference {ref['seconds']:.1f}s ours {ours['seconds']:.1f}s")
            report[f"speedup_{key}"] = round(ref["seconds"] / ours["seconds"], 2)
            report[f"reference_seconds_{key}"] = round(ref["seconds"], 2)
            report[f"ours_seconds_{key}"] = round(ours["seconds"], 2)
            report[f"runs_seconds_{key}"] = {"reference": ref["runs_seconds"], "ours": ours["runs_seconds"]}
            report[f"reference_peak_rss_gb_{key}"] = round(ref["peak_rss_gb"], 2)
            report[f"budget_{key}"] = int(0.1 * n)
            report[f"reference_selected_per_cluster_{key}"] = ref["selected_per_cluster"]
            report[f"ours_selected_per_cluster_{key}"] = ours["selected_per_cluster"]
            report[f"reference_kept_per_cluster_{key}"] = ref["kept_per_cluster"]
            report[f"ours_kept_per_cluster_{key}"] = ours["kept_per_cluster"]

        times, rss = [], []
        for n in scale:
            key = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}m"
            ours = best_of(2, "ours", str(directory), str(n))
            if n != scale[-1]:  # recall of our cell search against the exhaustive (exact) one
                report[f"dedup_recall_{key}"], report[f"dedup_exact_count_{key}"] = recall(directory, n, ours["dups"])
            if n == scale[1] and args.one_cluster:
                one = in_child("ours-one", str(directory), str(n))
                report[f"dedup_recall_{key}_one_cluster"], report[f"dedup_exact_count_{key}_one_cluster"] = recall(
                    directory, n, one["dups"], "exact-one")
                report[f"prune_s_{key}_one_cluster"] = round(one["prune_s"], 2)
            log(f"{n}: ours {ours['seconds']:.1f}s rss {ours['peak_rss_gb']:.2f} GB")
            times.append(ours["seconds"])
            rss.append(ours["peak_rss_gb"])
            report[f"stages_s_{n}"] = {k: round(ours[k], 2) for k in ("cluster_s", "select_s", "prune_s")}
            report[f"runs_seconds_{n}"] = ours["runs_seconds"]
            report[f"pruned_{n}"] = {"near_duplicate": ours["pruned_near_duplicate"], "pool_cap": ours["pruned_pool_cap"]}
        report["scale_sizes"] = list(scale)
        report["scale_seconds"] = [round(t, 2) for t in times]
        report["scale_peak_rss_gb"] = [round(r, 2) for r in rss]
        report["seconds_1m"] = round(times[-1], 2)
        report["peak_rss_gb_1m"] = round(rss[-1], 2)
        slope = np.polyfit(np.log(scale), np.log(times), 1)[0]
        report["growth_exponent"] = round(float(slope), 3)
        report["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
