"""Stage select (queue select): clusters, experts, budget, CCS; the pruning decision.

Reads every shard blob (sha256 checked) into one float16 file in candidate order, runs
`select_samples` and, when the round prunes, `prune_pool` on the same features and clustering
(DESIGN §2 step 8 runs after selection; doing it here saves a second read of all features).
Selection rows are round-scoped and committed with the move to the next stage; the pruning
decision and cluster assignment go to a blob, and (when the pool config asks for it,
`pool_index`) the pool's FAISS index version to another; finalize applies the first and records
the second in index_versions. The dashboard's cluster view (a 2-D map and score histograms,
`cluster_map`) goes to a third blob. All three are named in round_blobs in the transaction that
ends the stage, so the garbage collector keeps them from then on.

A shard blob found missing or corrupt when the stage starts is not a dead end: the shard is
computed again from the frozen candidates (`reopen_shards` sends the round back to features
for it, and the last shard's commit brings it here again). A shard damaged again after that
fails the round, naming the blob: the store itself is losing writes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update

from core.text import json_safe
from service.db.models import FeatureShard, Score, Selection
from workers.engine.feature_file import FeatureFileWriter, FileRows
from workers.engine.features import SCORE_NAMES, read_shard, read_shard_meta
from workers.engine.pruning import prune_pool
from workers.engine.selection import select_samples
from workers.engine.selection.cluster_map import build_cluster_view
from workers.rounds.advance import Outgoing, claim_stage, enter_stage, next_stage
from service.round_blobs import record_round_blobs
from workers.rounds.features_stage import enter_features
from workers.rounds.plan import CandidatePlan, shard_bounds
from workers.rounds.plan_blob import load_plan
from workers.rounds.runner import StageRun

log = logging.getLogger(__name__)


class ShardBlobError(Exception):
    """A feature shard blob is missing, corrupt, or does not match the plan."""

    code = "blob_corrupt"


def read_features(run: StageRun, workdir: Path) -> tuple[np.ndarray, FileRows, dict[str, np.ndarray], FileRows | None]:
    """(ids int64[n], features float16[n, d], scores float32[n] per expert, hidden float16[n, h] or
    None) in candidate order; features and hidden as `FileRows` over .npy files in `workdir`.

    The files are written with plain writes, not through a memmap: dirty mapped pages would stay
    in the worker's resident set (3.1 GB of features at 200k × 8,192)."""
    with run.ctx.session_factory() as session:
        shards = session.scalars(
            select(FeatureShard).where(FeatureShard.round_id == run.ref.round_id).order_by(FeatureShard.shard)
        ).all()
    if not shards or any(s.status != "done" for s in shards):
        raise ShardBlobError(f"round {run.ref.round_id}: select started with unfinished feature shards")
    n = sum(s.rows for s in shards)
    ids = np.empty(n, dtype=np.int64)
    scores = {k: np.empty(n, dtype=np.float32) for k in SCORE_NAMES}
    files: dict[str, Any] = {}
    pos = 0
    expected = run.cfg.features.fingerprint()
    try:
        for k, shard in enumerate(shards):
            if not run.blobs.verify(shard.blob):
                raise ShardBlobError(f"feature shard {shard.shard} blob {shard.blob} is missing or corrupt")
            meta = read_shard_meta(run.blobs.materialize(shard.blob))
            if (meta.get("config"), meta.get("adapter_sha")) != (expected, run.ref.state.get("adapter_sha")):
                # e.g. a shard redelivered to a worker still running an older release during an upgrade
                raise ShardBlobError(f"feature shard {shard.shard} was computed with feature config {meta.get('config')} "
                                     f"and adapter {meta.get('adapter_sha')}, not this round's {expected} and "
                                     f"{run.ref.state.get('adapter_sha')}: features of different projections cannot mix")
            batch = read_shard(run.blobs.materialize(shard.blob))
            m = len(batch)
            if m != shard.rows:
                raise ShardBlobError(f"feature shard {shard.shard} holds {m} rows, its SQL row says {shard.rows}")
            if k == 0:
                files["features"] = FeatureFileWriter(workdir / "features.npy", (n, batch.features.shape[1]))
                if batch.hidden is not None:
                    files["hidden"] = FeatureFileWriter(workdir / "hidden.npy", (n, batch.hidden.shape[1]))
            if ("hidden" in files) != (batch.hidden is not None):
                raise ShardBlobError(f"feature shard {shard.shard}: hidden embeddings in some shards only")
            for name, arr in (("features", batch.features), ("hidden", batch.hidden)):
                if arr is not None and arr.shape != (m, files[name].width):
                    raise ShardBlobError(f"feature shard {shard.shard}: {name} of shape {arr.shape}, expected "
                                         f"({m}, {files[name].width}) like the round's first shard")
            files["features"].write(batch.features)
            if batch.hidden is not None:
                files["hidden"].write(batch.hidden)
            ids[pos : pos + m] = batch.ids
            for name in SCORE_NAMES:
                scores[name][pos : pos + m] = batch.scores[name]
            pos += m
            # the round's select stage: reading the shards is its first half, selecting per cluster its second
            run.watch.report(k + 1, len(shards), unit="shards", fraction=0.5 * (k + 1) / len(shards))
            run.watch.check()  # cancel honoured between shard reads (at most once a second)
    finally:
        for f in files.values():
            f.close()
    with contextlib.ExitStack() as opened:  # closes what was opened if a later open fails
        features = opened.enter_context(FileRows(workdir / "features.npy"))
        hidden = opened.enter_context(FileRows(workdir / "hidden.npy")) if "hidden" in files else None
        opened.pop_all()
    return ids, features, scores, hidden


def damaged_shards(run: StageRun) -> list[tuple[int, str | None]]:
    """(shard, blob) of the round's done shards whose blob is missing or no longer hashes to its
    name (hashed once per version of the file, so reading them next costs no second hash)."""
    with run.ctx.session_factory() as session:
        done = session.execute(
            select(FeatureShard.shard, FeatureShard.blob)
            .where(FeatureShard.round_id == run.ref.round_id, FeatureShard.status == "done").order_by(FeatureShard.shard)
        ).all()
    return [(int(k), blob) for k, blob in done if blob is None or not run.blobs.verify(blob)]


def reopen_shards(run: StageRun, plan: CandidatePlan, damaged: list[tuple[int, str | None]]) -> tuple[list[Outgoing], dict[str, Any]]:
    """Send the round back to features for the `damaged` shards: in one transaction their rows
    go back to pending, their Score rows are deleted and a job per shard is created (so every
    candidate is still scored exactly once). Once per shard and round: a shard damaged again
    fails the round."""
    ref = run.ref
    shards = [k for k, _ in damaged]
    bounds = shard_bounds(len(plan.candidates), run.cfg.shard_size)
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "select")
        before = set((parent.result or {}).get("recomputed_shards") or [])
        again = [(k, blob) for k, blob in damaged if k in before]
        if again:
            k, blob = again[0]
            raise ShardBlobError(
                f"feature shard {k} blob {blob} is missing or corrupt again after it was computed a second time: "
                f"the blob store is losing what is written to it. Check the disk under ADAPTINF_DATA_DIR (or the "
                f"bucket of ADAPTINF_BLOB_STORE), then start a new round")
        for k in shards:
            start, end = bounds[k]
            session.execute(
                update(FeatureShard).where(FeatureShard.round_id == ref.round_id, FeatureShard.shard == k)
                .values(status="pending", blob=None, rows=0, finished_at=None).execution_options(synchronize_session=False))
            # the candidates are sorted, so a shard's are exactly the ids in its range (no IN list
            # of up to shard_size ids, over PostgreSQL's bind-parameter limit)
            session.execute(delete(Score).where(Score.round_id == ref.round_id, Score.sample_id.between(
                plan.candidates[start], plan.candidates[end - 1])))
        out = enter_features(session, parent, ref, run.settings, {"recomputed_shards": sorted(before | set(shards))})
    for k, blob in damaged:
        message = f"feature shard {k}: its blob {blob} is missing or corrupt; computing the shard again"
        run.ctx.event(message, level="warning", shard=k, blob=blob)
        run.watch.event(message, level="warning", shard=k, blob=blob)
    return out, {"recomputing_shards": shards}


def run_select(run: StageRun) -> tuple[list[Outgoing], dict[str, Any]]:
    ref, params = run.ref, run.ref.params
    run.ctx.stage("select", unit="shards")
    plan = load_plan(run.blobs, ref.state["candidates_blob"])
    damaged = damaged_shards(run)
    if damaged:
        return reopen_shards(run, plan, damaged)
    run.settings.work_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"select-{ref.round_id}-", dir=run.settings.work_dir))
    clock = {"read": time.perf_counter()}
    features = hidden = None
    try:
        ids, features, scores, hidden = read_features(run, workdir)
        if ids.tolist() != plan.candidates:
            raise ShardBlobError(f"round {ref.round_id}: the shards do not hold exactly the frozen candidates")
        run.watch.check(force=True)
        seed = int(params.get("seed", 0))
        clock["select"] = time.perf_counter()
        result = select_samples(ids, features, scores, params.get("method", "adapt-inf"), params["budget"],
                                run.cfg.selection, seed,
                                on_cluster=lambda c, n: run.watch.report(c, n, unit="clusters", fraction=0.5 + 0.5 * c / n))
        run.watch.check(force=True)
        clock["prune"] = time.perf_counter()
        pruned = []
        if params.get("prune", True):
            by = hidden if run.cfg.pruning.embedding == "hidden" else features
            if by is None:
                raise ShardBlobError(f"round {ref.round_id}: pruning on hidden states, but the shards hold none")
            # a new-only round prunes its new samples; the members it leaves alone count against the cap
            others = len(set(plan.members) - set(plan.candidates))
            pruned = prune_pool(ids, by, result.clustering, run.cfg.pruning, result.budget, others)
        run.watch.check(force=True)
        clock["map"] = time.perf_counter()
        # the dashboard's map and score histograms (bounded: <= 20k points, three reads of them); a
        # picture, so a failure to draw it is logged and leaves the round without one (the API's 404)
        try:
            view = build_cluster_view(
                ids, features, result.clustering.assign, np.array([p.sample_id for p in result.selected], dtype=np.int64),
                np.array([p.sample_id for p in pruned], dtype=np.int64), {c.id: c.expert for c in result.clusters},
                scores, seed)
        except (ValueError, ArithmeticError):  # np.linalg.LinAlgError is a ValueError
            log.exception("round %s: no cluster view (the dashboard's map) for this round", ref.round_id)
            view = None
        clock["index"] = time.perf_counter()
        index = None
        if run.cfg.pool_index:
            index = write_pool_index(run, ids, features, {p.sample_id for p in pruned}, workdir)
        clock["end"] = time.perf_counter()
    finally:
        for rows in (features, hidden):
            if rows is not None:
                rows.close()
        shutil.rmtree(workdir, ignore_errors=True)
    marks = list(clock.values())
    seconds = {f"{name}_s": round(b - a, 3) for name, a, b in zip(clock, marks, marks[1:])}
    decision = {"assign": result.clustering.assign.tolist(), "pruned": [asdict(p) for p in pruned]}
    decision_blob = run.blobs.put_bytes(json.dumps(json_safe(decision), separators=(",", ":")).encode())
    view_blob = None if view is None else run.blobs.put_bytes(json.dumps(json_safe(view), separators=(",", ":")).encode())
    pruned_per_cluster = np.bincount([p.cluster for p in pruned], minlength=result.clustering.n_clusters)
    clusters = [
        {"id": c.id, "size": c.size, "expert": c.expert, "entropies": c.entropies, "budget": c.budget,
         "selected": c.selected, "pruned": int(pruned_per_cluster[c.id]), "set_aside": c.pruned}
        for c in result.clusters
    ]
    updates = json_safe({"decision_blob": decision_blob.sha256, "budget": result.budget, "selected": len(result.selected),
                         "pruned": len(pruned), "clusters": clusters, "index": index})
    rows = [
        {"round_id": ref.round_id, "sample_id": p.sample_id, "cluster": p.cluster, "expert": p.expert,
         "score": p.score if p.score is None or math.isfinite(p.score) else None, "stratum": p.stratum}
        for p in result.selected
    ]
    with run.ctx.session_factory() as session, session.begin():
        parent = claim_stage(session, run.ctx, ref.parent_id, "select")
        session.execute(delete(Selection).where(Selection.round_id == ref.round_id))  # none: a commit advances
        session.execute(insert(Selection), rows)
        record_round_blobs(session, ref.round_id, decision=decision_blob.sha256,
                           cluster_view=view_blob and view_blob.sha256, index=index and index["blob"])
        out = enter_stage(session, parent, ref, run.settings, next_stage("select", updates, params), updates)
    return out, {"selected": len(rows), "pruned": len(pruned), "clusters": len(clusters), "seconds": seconds,
                 "cluster_view_blob": view_blob and view_blob.sha256}


def write_pool_index(run: StageRun, ids: np.ndarray, features: FileRows, pruned: set[int],
                     workdir: Path) -> dict[str, Any]:
    """Put the pool's FAISS index version of this round, over the survivors (the next pool), in
    the blob store; finalize records it in index_versions with the pool's other changes."""
    from workers.engine.index import store_index_version

    keep = ~np.isin(ids, np.fromiter(pruned, dtype=np.int64, count=len(pruned)))
    with contextlib.ExitStack() as opened:
        if not keep.all():
            # the survivors copied block by block into a second file (the index build itself
            # holds the index's codes, n × d half-floats, in memory)
            rows = np.flatnonzero(keep)
            out = opened.enter_context(contextlib.closing(FeatureFileWriter(workdir / "kept.npy", (len(rows), features.shape[1]))))
            for start in range(0, len(rows), 4_096):
                out.write(features[rows[start : start + 4_096]])
            out.close()
            ids, features = ids[keep], opened.enter_context(FileRows(workdir / "kept.npy"))
        version = store_index_version(run.blobs, workdir, run.ref.number, ids, features,
                                      seed=int(run.ref.params.get("seed", 0)))
    return index_record(version)


def index_record(version: Any) -> dict[str, Any]:  # noqa: ANN401 - workers.engine.index.IndexVersion
    """The index_versions columns of a stored version (the round's state carries them to finalize)."""
    return {"blob": version.sha256, "sha256": version.sha256, "size_bytes": version.size_bytes,
            "ntotal": version.ntotal, "kind": version.kind, "dim": version.dim}
