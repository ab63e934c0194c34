"""What a feature-shard job spends on the round's frozen candidate plan, before and after slices.

Before: the plan was one canonical-JSON blob; every shard job verified it (sha256 of the whole
file), read and parsed all of it, and sliced its ids out (the previous release's `load_plan`,
kept below as the reference). After: `load_shard_ids` reads the header, one digest and its slice.
Both run against the local blob store in a temporary directory, in one process, as a worker
runs shard after shard (the local store's verify memo, core/verified.py, applies as it does there).

    python bench/plan_slices.py                      # 1M candidates, shard size 256
    python bench/plan_slices.py --candidates 200000 --jobs 50

Prints one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.blobs import BlobStore, LocalBlobStore
from workers.rounds.plan import CandidatePlan, shard_bounds
from workers.rounds.plan_blob import freeze_plan, load_plan, load_shard_ids


def synthetic_plan(n: int, new_share: float = 0.1) -> CandidatePlan:
    """`n` candidates: pool members with a tenth new samples, a few duplicates, ids with gaps."""
    ids = list(range(1, 3 * n, 3))[:n]
    cut = int(n * (1 - new_share))
    members, new = ids[:cut], ids[cut:]
    duplicates = [[3 * n + i, new[i % len(new)]] for i in range(min(1000, len(new)))]
    return CandidatePlan(ids, members, new, duplicates, previously_pruned=[2, 5, 8])


def shard_ids_before(blobs: BlobStore, sha256: str, shard: int, shard_size: int) -> list[int]:
    """The previous release's shard job: verify, read and parse the whole JSON plan, slice."""
    if not blobs.verify(sha256):
        raise RuntimeError(f"plan blob {sha256} is corrupt")
    with blobs.open(sha256) as f:
        plan = CandidatePlan(**json.loads(f.read()))
    a, b = shard_bounds(len(plan.candidates), shard_size)[shard]
    return plan.candidates[a:b]


def header_bytes(blobs: BlobStore, sha256: str) -> int:
    """The plan blob's magic, header length and header (see workers/rounds/plan_blob.py)."""
    with blobs.open(sha256) as f:
        head = f.read(16)
    return 16 + int.from_bytes(head[8:16], "little")


def per_job_seconds(fn, shards: list[int]) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for k in shards:
        fn(k)
    return (time.perf_counter() - start) / len(shards)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", type=int, default=1_000_000)
    p.add_argument("--shard-size", type=int, default=256, help="the pool config's default")
    p.add_argument("--jobs", type=int, default=20, help="shard jobs timed per format, spread over the plan")
    args = p.parse_args(argv)
    plan = synthetic_plan(args.candidates)
    n_shards = len(shard_bounds(args.candidates, args.shard_size))
    shards = sorted({round(i * (n_shards - 1) / max(1, args.jobs - 1)) for i in range(args.jobs)})
    with tempfile.TemporaryDirectory(prefix="plan-slices-") as tmp:
        blobs = LocalBlobStore(Path(tmp))
        old = blobs.put_bytes(json.dumps(asdict(plan), sort_keys=True, separators=(",", ":")).encode()).sha256
        new = freeze_plan(plan, blobs, args.shard_size)
        for k in shards:  # both give the same ids before anything is timed
            if shard_ids_before(blobs, old, k, args.shard_size) != load_shard_ids(blobs, new, k, args.shard_size):
                raise SystemExit(f"shard {k}: the two formats disagree")
        before = per_job_seconds(lambda k: shard_ids_before(blobs, old, k, args.shard_size), shards)
        after = per_job_seconds(lambda k: load_shard_ids(blobs, new, k, args.shard_size), shards)
        start = time.perf_counter()
        load_plan(blobs, new)
        full_after = time.perf_counter() - start
        out = {
            "candidates": args.candidates, "shard_size": args.shard_size, "shards": n_shards,
            "jobs_timed": len(shards),
            "per_job_s_before": round(before, 5), "per_job_s_after": round(after, 6),
            "speedup": round(before / after, 1),
            "cpu_s_per_round_before": round(before * n_shards, 1), "cpu_s_per_round_after": round(after * n_shards, 2),
            "plan_bytes_before": blobs.size(old), "plan_bytes_after": blobs.size(new),
            # the fixed prefix, the header, one digest and a full shard's ids
            "bytes_read_per_job_after": header_bytes(blobs, new) + 32 + 8 * args.shard_size,
            # the stages that need the whole plan (warm-up, select, finalize): once per round each
            "whole_plan_load_s_after": round(full_after, 3),
            "load_avg_1m": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
