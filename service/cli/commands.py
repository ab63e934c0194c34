"""The client commands: each takes (client, args), prints, and returns the exit code.

Exit codes: 0 success, 1 the job or download failed, 2 the API refused the request or could not
be reached (see service/cli/client.py).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from service.cli import output
from service.cli.output import note, print_json
from service.cli.watch import event_text, watch
from service.client import ChecksumMismatch, Client, Job, Sample


def _finish(client: Client, job_id: str, args: argparse.Namespace) -> Job:
    """Follow the job (live display on stderr), then one summary line on stderr."""
    job = watch(client, job_id, output.stderr(), interval=args.interval)
    note(output.job_summary(job))
    return job


def _code(job: Job) -> int:
    return 0 if job.status == "succeeded" else 1


def _started(client: Client, args: argparse.Namespace, created: Any, started: str, get: Callable[[str], Any],
             show: Callable[[Any], None]) -> int:
    """A resource whose job a request started: its warnings; with --wait, the job followed to its
    end and the resource read again (keeping the request's own warnings); then the resource."""
    output.show_warnings(created)
    code = 0
    if args.wait:
        note(started)
        code = _code(_finish(client, created.job_id, args))
        created = get(created.id).model_copy(update={"warnings": created.warnings})
    print_json(created) if args.json else show(created)
    return code


def _show(args: argparse.Namespace, value: Any, show: Callable[[Any], None]) -> int:
    """One resource: JSON with --json, else its readable summary."""
    print_json(value) if args.json else show(value)
    return 0


def _listing(args: argparse.Namespace, items: Iterable[Any], headers: list[str], row: Callable[[Any], tuple]) -> int:
    """A list: one JSON array with --json, else a table of `row(item)`."""
    if args.json:
        print_json(list(items))
    else:
        output.table(headers, (row(x) for x in items))
    return 0


def _done(args: argparse.Namespace, result: dict[str, Any], message: str) -> int:
    """A delete or removal: its result as JSON with --json, else one line on stderr."""
    print_json(result) if args.json else note(message)
    return 0


# ---- datasets --------------------------------------------------------------------------------


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
    if (args.file is None) == (args.uri is None):
        note("error: adaptinf datasets upload: give a FILE to upload or --uri s3://... / file://... (one)")
        return 2
    if args.uri is not None:
        if args.images:
            note("error: adaptinf datasets upload: with --uri, name the images archive with --images-uri")
            return 2
        ds = client.datasets.from_uri(args.uri, args.images_uri, name=args.name, format=args.format, skill=args.skill)
        said = f"dataset {ds.id} from {args.uri}; ingest job {ds.job_id}"
    else:
        if args.images_uri or args.format:
            note("error: adaptinf datasets upload: --images-uri and --format go with --uri")
            return 2
        ds = client.datasets.upload(args.file, args.images, name=args.name, skill=args.skill)
        said = f"dataset {ds.id} uploaded; ingest job {ds.job_id}"
    return _started(client, args, ds, said, client.datasets.get, output.show_dataset)


def datasets_list(client: Client, args: argparse.Namespace) -> int:
    return _listing(args, client.datasets.list(), ["ID", "STATUS", "SAMPLES", "IMAGES", "SKILL", "NAME"],
                    lambda d: (d.id, d.status, d.num_samples, d.num_images, d.skill, d.name))


def datasets_show(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.datasets.get(args.dataset_id), output.show_dataset)


def datasets_samples(client: Client, args: argparse.Namespace) -> int:
    samples = client.datasets.samples(args.dataset_id)
    rows = list(itertools.islice(samples, args.limit) if args.limit else samples)
    return _listing(args, rows, ["ID", "KEY", "SKILL", "IMAGES", "FIRST MESSAGE"],
                    lambda s: (s.id, s.key, s.skill, len(s.image_names), _first_message(s)))


def _first_message(sample: Sample) -> str:
    """The first turn's text, from the parsed messages or else the record's LLaVA conversations."""
    turns = sample.messages or sample.record.get("conversations") or []
    first = turns[0] if turns else ""
    text = first.get("value", first.get("content", "")) if isinstance(first, dict) else first
    text = " ".join(str(text).split())
    return text[:60] + ("…" if len(text) > 60 else "")


def datasets_delete(client: Client, args: argparse.Namespace) -> int:
    client.datasets.delete(args.dataset_id)
    return _done(args, {"id": args.dataset_id, "deleted": True}, f"deleted dataset {args.dataset_id}")


# ---- pools -----------------------------------------------------------------------------------


def pools_create(client: Client, args: argparse.Namespace) -> int:
    pool = client.pools.create(args.name, args.base_model, args.model_type, config=args.config,
                               eval_sets=args.eval_set or [])
    output.show_warnings(pool)
    return _show(args, pool, output.show_pool)


def pools_list(client: Client, args: argparse.Namespace) -> int:
    return _listing(args, client.pools.list(), ["ID", "NAME", "MODEL", "SIZE", "ROUNDS", "CHECKPOINT"],
                    lambda p: (p.id, p.name, p.base_model, p.size, p.rounds_completed, p.current_checkpoint_id))


def pools_show(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.pools.get(args.pool_id), output.show_pool)


def pools_add_eval_set(client: Client, args: argparse.Namespace) -> int:
    pool = client.pools.add_eval_set(args.pool_id, args.dataset_id, args.skill)
    output.show_warnings(pool)
    return _show(args, pool, output.show_pool)


def pools_clusters(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.pools.clusters(args.pool_id), output.show_clusters)


def pools_metrics(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.pools.metrics(args.pool_id, reference_pool_id=args.reference_pool), output.show_metrics)


def pools_delete(client: Client, args: argparse.Namespace) -> int:
    client.pools.delete(args.pool_id)
    return _done(args, {"id": args.pool_id, "deleted": True}, f"deleted pool {args.pool_id}")


def pools_remove_dataset(client: Client, args: argparse.Namespace) -> int:
    client.pools.remove_dataset(args.pool_id, args.dataset_id)
    return _done(args, {"pool_id": args.pool_id, "dataset_id": args.dataset_id, "removed": True},
                 f"removed dataset {args.dataset_id} from pool {args.pool_id}")


def pools_index(client: Client, args: argparse.Namespace) -> int:
    try:
        d = client.pools.download_index(args.pool_id, args.output, round_number=args.round_number)
    except ChecksumMismatch as exc:
        note(f"error: {exc}")
        return 1
    shape = f"round {d.round_number}, {d.rows} vectors of {d.dim or '?'} dims, {d.kind}; ids are sample ids"
    if d.already_complete:
        note(f"{d.path} is already complete ({shape})")
    else:
        if d.resumed_at is not None:
            note(f"resumed at byte {d.resumed_at}")
        note(f"wrote {d.path} ({d.size} bytes, {d.downloaded} downloaded, sha256 verified; {shape})")
    return 0


def pools_remove_eval_set(client: Client, args: argparse.Namespace) -> int:
    client.pools.remove_eval_set(args.pool_id, args.dataset_id)
    return _done(args, {"pool_id": args.pool_id, "eval_set": args.dataset_id, "removed": True},
                 f"removed eval set {args.dataset_id} from pool {args.pool_id}")


# ---- rounds ----------------------------------------------------------------------------------


def rounds_start(client: Client, args: argparse.Namespace) -> int:
    rnd = client.rounds.create(args.pool_id, args.dataset, args.budget, method=args.method, seed=args.seed,
                               candidates=args.candidates, train=not args.no_train, prune=not args.no_prune)
    return _started(client, args, rnd, f"round {rnd.id} (number {rnd.number}) started; job {rnd.job_id}",
                    client.rounds.get, output.show_round)


def rounds_list(client: Client, args: argparse.Namespace) -> int:
    return _listing(args, client.rounds.list(args.pool_id),
                    ["ID", "NUMBER", "STATUS", "METHOD", "BUDGET", "SELECTED", "STAGE"],
                    lambda r: (r.id, r.number, r.status, r.params.method, r.params.budget,
                               r.result.selected if r.result else None, r.job.stage if r.job else None))


def rounds_show(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.rounds.get(args.round_id), output.show_round)


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
    return _listing(args, client.jobs.list(status=args.status, kind=args.kind, parent_id=args.parent),
                    ["ID", "KIND", "STATUS", "STAGE", "PROGRESS", "CREATED"],
                    lambda j: (j.id, j.kind, j.status, j.stage, f"{j.progress.done}/{j.progress.total}",
                               j.created_at.strftime("%Y-%m-%d %H:%M:%S")))


def jobs_show(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.jobs.get(args.job_id), output.show_job)


def jobs_events(client: Client, args: argparse.Namespace) -> int:
    return _listing(args, client.jobs.events(args.job_id), ["ID", "TIME", "LEVEL", "TYPE", "EVENT"],
                    lambda e: (e.id, e.created_at.strftime("%H:%M:%S"), e.level, e.type, event_text(e)))


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
    return _listing(args, client.checkpoints.list(pool_id=args.pool),
                    ["ID", "POOL", "ROUND", "KIND", "BYTES", "CREATED"],
                    lambda c: (c.id, c.pool_id, c.round_number, c.kind, c.size_bytes,
                               c.created_at.strftime("%Y-%m-%d %H:%M:%S")))


def checkpoints_show(client: Client, args: argparse.Namespace) -> int:
    return _show(args, client.checkpoints.get(args.checkpoint_id), output.show_checkpoint)


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
