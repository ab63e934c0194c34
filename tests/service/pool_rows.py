"""Rows the round workers would write, inserted straight through the ORM, so the API tests of
pools, rounds, downloads and checkpoints do not depend on the worker side."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

from service.db.models import (
    Checkpoint,
    Dataset,
    EvalResult,
    Job,
    PoolMember,
    Round,
    RoundBlob,
    Sample,
    Selection,
    utcnow,
)
from service.db.session import session_scope
from core.blobs import BlobStore


def make_dataset(
    database_url: str,
    owner_id: str,
    n: int,
    *,
    status: str = "ready",
    name: str = "ds",
    blobs: BlobStore | None = None,
    image_names: list[str] | None = None,
    skill: str | None = None,
) -> tuple[str, list[int]]:
    """A dataset of `n` samples; with `blobs`, sample i uses image `image_names[i]` (distinct bytes).
    With `skill`, every sample declares it (and the dataset counts it, as ingest does)."""
    with session_scope(database_url) as session:
        ds = Dataset(owner_id=owner_id, name=name, status=status, num_samples=n, file_blob="0" * 64, file_name="d.json",
                     skill=skill, skill_counts={skill: n} if skill else {})
        session.add(ds)
        session.flush()
        ids = []
        for i in range(n):
            names, refs = [], []
            if blobs is not None:
                img = (image_names or [f"img/{i}.png" for i in range(n)])[i]
                names, refs = [img], [blobs.put_bytes(f"{ds.id}:{i}:image".encode()).sha256]
            record = {
                "id": f"s{i}",
                "image": names[0] if names else None,
                "conversations": [
                    {"from": "human", "value": ("<image>\n" if names else "") + f"question {i}"},
                    {"from": "gpt", "value": f"answer {i}"},
                ],
            }
            s = Sample(
                dataset_id=ds.id, position=i, key=f"s{i}", content_hash=hashlib.sha256(f"{ds.id}{i}".encode()).hexdigest(),
                record=record, messages=[], image_refs=refs, image_names=names, skill=skill,
            )
            session.add(s)
            session.flush()
            ids.append(s.id)
        return ds.id, ids


def adapter_tar_gz() -> bytes:
    """A tar.gz whose root holds a PEFT-looking adapter directory (config + safetensors header)."""
    config = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    header = json.dumps({"__metadata__": {"format": "pt"}}).encode()
    weights = len(header).to_bytes(8, "little") + header + bytes(range(256)) * 64
    buf = io.BytesIO()
    # mtime=0 in the gzip header: the same bytes on every call (tests compare against it).
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in (("adapter_config.json", config.encode()), ("adapter_model.safetensors", weights)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_round(
    database_url: str,
    pool_id: str,
    owner_id: str,
    *,
    number: int,
    status: str = "succeeded",
    selected: list[int] = (),
    members: list[int] = (),
    pruned: list[int] = (),
    blobs: BlobStore | None = None,
    evals: list[tuple[str, str, dict[str, Any]]] = (),
    clusters: list[dict[str, Any]] | None = None,
    dataset_ids: list[str] = (),
    base_eval_datasets: dict[str, dict[str, Any]] | None = None,
) -> dict[str, str | None]:
    """A round with its parent job, selection rows, pool members and (with `blobs`) a checkpoint
    evaluated by `evals` ((dataset_id, skill, {loss, accuracy, n}) rows). `dataset_ids` are its
    new datasets; `base_eval_datasets` the base model's scores per eval dataset. Returns the ids."""
    done = status in ("succeeded", "failed", "cancelled")
    clusters = clusters if clusters is not None else [
        {"id": 0, "size": len(selected) + 3, "expert": "el2n", "entropies": {"el2n": 3.1, "ppl": 2.0},
         "budget": len(selected), "selected": len(selected), "pruned": len(pruned)},
    ]
    with session_scope(database_url) as session:
        job = Job(owner_id=owner_id, kind="round", queue="select", params={}, status=status,
                  stage="finalize" if done else "features", progress_done=3, progress_total=7)
        session.add(job)
        session.flush()
        rnd = Round(pool_id=pool_id, number=number, status=status, job_id=job.id,
                    params={"dataset_ids": list(dataset_ids), "budget": len(selected) or 1, "method": "adapt-inf",
                            "train": True, "prune": True, "seed": 0},
                    result={"method": "adapt-inf", "clusters": clusters, "selected": len(selected),
                            "base_eval_datasets": base_eval_datasets or {}} if done else None,
                    finished_at=utcnow() if done else None)
        session.add(rnd)
        session.flush()
        job.params = {"round_id": rnd.id}
        for k, sid in enumerate(selected):
            session.add(Selection(round_id=rnd.id, sample_id=sid, cluster=k % 2, expert="el2n",
                                  score=0.5 + k, stratum=k))
        for sid in members:
            session.add(PoolMember(pool_id=pool_id, sample_id=sid, status="active", joined_round=number))
        for sid in pruned:
            session.add(PoolMember(pool_id=pool_id, sample_id=sid, status="pruned", joined_round=number,
                                   pruned_round=number, reason="near_duplicate"))
        ckpt_id = None
        if blobs is not None:
            ref = blobs.put_bytes(adapter_tar_gz())
            ckpt = Checkpoint(pool_id=pool_id, round_id=rnd.id, kind="round", blob=ref.sha256, size_bytes=ref.size,
                              metrics={"steps": 4, "loss_first": 2.0, "loss_last": 1.5, "mean_loss": 1.7})
            session.add(ckpt)
            session.flush()
            ckpt_id = ckpt.id
            for dataset_id, skill, m in evals:
                session.add(EvalResult(checkpoint_id=ckpt.id, dataset_id=dataset_id, skill=skill, metrics=m))
        session.flush()
        return {"round_id": rnd.id, "job_id": job.id, "checkpoint_id": ckpt_id}


def add_checkpoint(
    database_url: str, pool_id: str, blobs: BlobStore, *, round_id: str | None = None, kind: str = "round",
    content: bytes | None = None, evals: list[tuple[str, str, dict[str, Any]]] = (),
) -> str:
    """A checkpoint row over a stored blob, with evaluation rows (dataset_id, skill, metrics)."""
    ref = blobs.put_bytes(content if content is not None else adapter_tar_gz())
    with session_scope(database_url) as session:
        ckpt = Checkpoint(pool_id=pool_id, round_id=round_id, kind=kind, blob=ref.sha256, size_bytes=ref.size,
                          metrics={"steps": 2})
        session.add(ckpt)
        session.flush()
        for dataset_id, skill, m in evals:
            session.add(EvalResult(checkpoint_id=ckpt.id, dataset_id=dataset_id, skill=skill, metrics=m))
        return ckpt.id


def with_images(database_url: str, dataset_id: str, n: int = 3) -> None:
    """Mark a dataset as holding `n` images (the pool checks read the count)."""
    with session_scope(database_url) as session:
        session.get(Dataset, dataset_id).num_images = n


def set_job(database_url: str, job_id: str, **fields: object) -> None:
    """Set columns of a job row (a test playing the worker)."""
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)


def add_cluster_view(database_url: str, round_job_id: str, owner_id: str, blobs: BlobStore,
                     sample_ids: list[int]) -> str:
    """The select stage's cluster view of a round (the map and score histograms) over `sample_ids`,
    stored as a blob and named by round_blobs (and a succeeded `round.select` child job's result),
    as the worker leaves it."""
    n = len(sample_ids)
    view = {
        "candidates": n,
        "points": {"sample_id": list(sample_ids), "x": [float(i) for i in range(n)], "y": [0.5] * n,
                   "cluster": [i % 2 for i in range(n)], "selected": [i == 0 for i in range(n)], "pruned": [False] * n},
        "histograms": [{"cluster": 0, "expert": "el2n", "log_scale": False, "edges": [0.0, 0.5, 1.0],
                        "counts": [1, n - 1], "selected": [1, 0], "unscored": 0}],
    }
    ref = blobs.put_bytes(json.dumps(view).encode())
    with session_scope(database_url) as session:
        session.add(Job(owner_id=owner_id, kind="round.select", queue="select", params={}, parent_id=round_job_id,
                        status="succeeded", result={"cluster_view_blob": ref.sha256}))
        round_id = session.get(Job, round_job_id).params["round_id"]
        session.add(RoundBlob(round_id=round_id, kind="cluster_view", blob=ref.sha256))
    return ref.sha256
