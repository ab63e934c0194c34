"""The client commands: each takes (client, args), prints, and returns the exit code.

Exit codes: 0 success, 1 the job or download failed, 2 the API refused the request or could not
be reached (see service/cli/client.py).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from service.cli import output
from service.cli.output import note, print_json
from service.cli.watch import watch
from service.client import ChecksumMismatch, Client, Job, Sample


def _finish(client: Client, job_id: str, args: argparse.Namespace) -> Job:
    """Follow the job (live display on stderr), then one summary line on stderr."""
    job = watch(client, job_id, output.stderr(), interval=args.interval)
    note(output.job_summary(job))
    return job


def _code(job: Job) -> int:
    return 0 if job.status == "succeeded" else 1


# ---- datasets --------------------------------------------------------------------------------


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
    ds = client.datasets.upload(args.file, args.images, name=args.name, skill=args.skill)
    output.show_warnings(ds)
    code = 0
    if args.wait:
        note(f"dataset {ds.id} uploaded; ingest job {ds.job_id}")
        code = _code(_finish(client, ds.job_id, args))
        ds = client.datasets.get(ds.id).model_copy(update={"warnings": ds.warnings})  # the upload's own
    print_json(ds) if args.json else output.show_dataset(ds)
    return code


def datasets_list(client: Client, args: argparse.Namespace) -> int:
    items = client.datasets.list()
    if args.json:
        print_json(list(items))
    else:
        output.table(["ID", "STATUS", "SAMPLES", "IMAGES", "SKILL", "NAME"],
                     ((d.id, d.status, d.num_samples, d.num_images, d.skill, d.name) for d in items))
    return 0


def datasets_show(client: Client, args: argparse.Namespace) -> int:
    ds = client.datasets.get(args.dataset_id)
    print_json(ds) if args.json else output.show_dataset(ds)
    return 0


def datasets_samples(client: Client, args: argparse.Namespace) -> int:
    samples = client.datasets.samples(args.dataset_id)
    rows = list(itertools.islice(samples, args.limit) if args.limit else samples)
    if args.json:
        print_json(rows)
    else:
        output.table(["ID", "KEY", "SKILL", "IMAGES", "FIRST MESSAGE"],
                     ((s.id, s.key, s.skill, len(s.image_names), _first_message(s)) for s in rows))
    return 0


def _first_message(sample: Sample) -> str:
    """The first turn's text, from the parsed messages or else the record's LLaVA conversations."""
    turns = sample.messages or sample.record.get("conversations") or []
    first = turns[0] if turns else ""
    text = first.get("value", first.get("content", "")) if isinstance(first, dict) else first
    text = " ".join(str(text).split())
    return text[:60] + ("…" if len(text) > 60 else "")


def datasets_delete(client: Client, args: argparse.Namespace) -> int:
    client.datasets.delete(args.dataset_id)
    print_json({"id": args.dataset_id, "deleted": True}) if args.json else note(f"deleted dataset {args.dataset_id}")
    return 0


# ---- pools -----------------------------------------------------------------------------------


def pools_create(client: Client, args: argparse.Namespace) -> int:
    pool = client.pools.create(args.name, args.base_model, args.model_type, config=args.config,
                               eval_sets=args.eval_set or [])
    output.show_warnings(pool)
    print_json(pool) if args.json else output.show_pool(pool)
    return 0


def pools_list(client: Client, args: argparse.Namespace) -> int:
    items = client.pools.list()
    if args.json:
        print_json(list(items))
    else:
        output.table(["ID", "NAME", "MODEL", "SIZE", "ROUNDS", "CHECKPOINT"],
                     ((p.id, p.name, p.base_model, p.size, p.rounds_completed, p.current_checkpoint_id) for p in items))
    return 0


def pools_show(client: Client, args: argparse.Namespace) -> int:
    pool = client.pools.get(args.pool_id)
    print_json(pool) if args.json else output.show_pool(pool)
    return 0


def pools_add_eval_set(client: Client, args: argparse.Namespace) -> int:
    pool = client.pools.add_eval_set(args.pool_id, args.dataset_id, args.skill)
    output.show_warnings(pool)
    print_json(pool) if args.json else output.show_pool(pool)
    return 0


def pools_clusters(client: Client, args: argparse.Namespace) -> int:
    clusters = client.pools.clusters(args.pool_id)
    print_json(clusters) if args.json else output.show_clusters(clusters)
    return 0


def pools_metrics(client: Client, args: argparse.Namespace) -> int:
    metrics = client.pools.metrics(args.pool_id, reference_pool_id=args.reference_pool)
    print_json(metrics) if args.json else output.show_metrics(metrics)
    return 0


def pools_delete(client: Client, args: argparse.Namespace) -> int:
    client.pools.delete(args.pool_id)
    print_json({"id": args.pool_id, "deleted": True}) if args.json else note(f"deleted pool {args.pool_id}")
    return 0


def pools_remove_dataset(client: Client, args: argparse.Namespace) -> int:
    client.pools.remove_dataset(args.pool_id, args.dataset_id)
    result = {"pool_id": args.pool_id, "dataset_id": args.dataset_id, "removed": True}
    print_json(result) if args.json else note(f"removed dataset {args.dataset_id} from pool {args.pool_id}")
    return 0


def pools_remove_eval_set(client: Client, args: argparse.Namespace) -> int:
    client.pools.remove_eval_set(args.pool_id, args.dataset_id)
    result = {"pool_id": args.pool_id, "eval_set": args.dataset_id, "removed": True}
    print_json(result) if args.json else note(f"removed eval set {args.dataset_id} from pool {args.pool_id}")
    return 0


# ---- rounds ----------------------------------------------------------------------------------


def rounds_start(client: Client, args: argparse.Namespace) -> int:
    rnd = client.rounds.create(args.pool_id, args.dataset, args.budget, method=args.method, seed=args.seed,
                               candidates=args.candidates, train=not args.no_train, prune=not args.no_prune)
    output.show_warnings(rnd)
    code = 0
    if args.wait:
        note(f"round {rnd.id} (number {rnd.number}) started; job {rnd.job_id}")
        code = _code(_finish(client, rnd.job_id, args))
        rnd = client.rounds.get(rnd.id).model_copy(update={"warnings": rnd.warnings})  # the request's own
    print_json(rnd) if args.json else output.show_round(rnd)
    return code


def rounds_list(client: Client, args: argparse.Namespace) -> int:
    items = client.rounds.list(args.pool_id)
    if args.json:
        print_json(list(items))
    else:
        output.table(["ID", "NUMBER", "STATUS", "METHOD", "BUDGET", "SELECTED", "STAGE"],
                     ((r.id, r.number, r.status, r.params.method, r.params.budget,
                       r.result.selected if r.result else None, r.job.stage if r.job else None) for r in items))
    return 0


def rounds_show(client: Client, args: argparse.Namespace) -> int:
    rnd = client.rounds.get(args.round_id)
    print_json(rnd) if args.json else output.show_round(rnd)
    return 0


def rounds_download(client: Client, args: argparse.Namespace) -> int:
    if args.output == "-":
        client.rounds.download_selection(args.round_id, sys.stdout.buffer, format=args.format)
        sys.stdout.flush()
        return 0
    out = Path(args.output or f"{args.round_id}-selection.{args.format}")
    n = client.rounds.download_selection(args.round_id, out, format=args.format)
    note(f"wrote {n} bytes to {out}")
    return 0


# ---- jobs ------------------------------------------------------------------------------------


def jobs_list(client: Client, args: argparse.Namespace) -> int:
    items = client.jobs.list(status=args.status, kind=args.kind, parent_id=args.parent)
    if args.json:
        print_json(list(items))
    else:
        output.table(["ID", "KIND", "STATUS", "STAGE", "PROGRESS", "CREATED"],
                     ((j.id, j.kind, j.status, j.stage, f"{j.progress.done}/{j.progress.total}",
                       j.created_at.strftime("%Y-%m-%d %H:%M:%S")) for j in items))
    return 0


def jobs_show(client: Client, args: argparse.Namespace) -> int:
    job = client.jobs.get(args.job_id)
    print_json(job) if args.json else output.show_job(job)
    return 0


def jobs_events(client: Client, args: argparse.Namespace) -> int:
    events = client.jobs.events(args.job_id)
    if args.json:
        print_json(list(events))
    else:
        from service.cli.watch import event_text

        output.table(["ID", "TIME", "LEVEL", "TYPE", "EVENT"],
                     ((e.id, e.created_at.strftime("%H:%M:%S"), e.level, e.type, event_text(e)) for e in events))
    return 0


def jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.jobs.cancel(args.job_id)
    print_json(job) if args.json else note(f"job {job.id}: {job.status}")
    return 0


def jobs_watch(client: Client, args: argparse.Namespace) -> int:
    job = _finish(client, args.job_id, args)
    if args.json:
        print_json(job)
    return _code(job)


# ---- checkpoints -----------------------------------------------------------------------------


def checkpoints_list(client: Client, args: argparse.Namespace) -> int:
    items = client.checkpoints.list(pool_id=args.pool)
    if args.json:
        print_json(list(items))
    else:
        output.table(["ID", "POOL", "ROUND", "KIND", "BYTES", "CREATED"],
                     ((c.id, c.pool_id, c.round_number, c.kind, c.size_bytes,
                       c.created_at.strftime("%Y-%m-%d %H:%M:%S")) for c in items))
    return 0


def checkpoints_show(client: Client, args: argparse.Namespace) -> int:
    ckpt = client.checkpoints.get(args.checkpoint_id)
    print_json(ckpt) if args.json else output.show_checkpoint(ckpt)
    return 0


def checkpoints_download(client: Client, args: argparse.Namespace) -> int:
    try:
        d = client.checkpoints.download(args.checkpoint_id, args.output)
    except ChecksumMismatch as exc:
        note(f"error: {exc}")
        return 1
    if d.already_complete:
        note(f"{d.path} is already complete")
    else:
        if d.resumed_at is not None:
            note(f"resumed at byte {d.resumed_at}")
        note(f"wrote {d.path} ({d.size} bytes, {d.downloaded} downloaded, sha256 verified)")
    return 0
