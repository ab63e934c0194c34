"""Client commands: `adaptinf datasets|pools|rounds|jobs|download ...` against a running API.

Connection: --api-url / --api-key, or ADAPTINF_API_URL / ADAPTINF_API_KEY. Show and create
commands print JSON on stdout; progress and notes go to stderr. Exit codes: 0 success, 1 the
job or download failed, 2 the API refused the request (its problem+json as one line) or could
not be reached.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import re
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from service.cli.api_client import Api, ApiError, watch_job

DEFAULT_API_URL = "http://127.0.0.1:8000"
_CHUNK = 1024 * 1024


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


def command(fn: Callable[[Api, argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Build the Api from the args; map API and connection errors to one stderr line and exit 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        url = args.api_url or os.environ.get("ADAPTINF_API_URL") or DEFAULT_API_URL
        key = args.api_key or os.environ.get("ADAPTINF_API_KEY")
        if not key:
            _note("error: no API key: pass --api-key or set ADAPTINF_API_KEY (adaptinf keys create)")
            return 2
        api = Api(url, key)
        try:
            return fn(api, args)
        except ApiError as exc:
            _note(f"error: {exc}")
            return 2
        except httpx.TransportError as exc:
            _note(f"error: cannot reach the API at {api.url} (set --api-url or ADAPTINF_API_URL): "
                  f"{exc or type(exc).__name__}")
            return 2
        except KeyboardInterrupt:
            _note("interrupted")
            return 130
        finally:
            api.http.close()

    return run


def _job_outcome(job: dict[str, Any]) -> int:
    if job["status"] == "succeeded":
        return 0
    err = job.get("error") or {}
    _note(f"error: job {job['id']} {job['status']}: {err.get('code', '')}: {err.get('message', '')}".rstrip(": "))
    return 1


# ---- commands ---------------------------------------------------------------------------------


@command
def cmd_datasets_upload(api: Api, args: argparse.Namespace) -> int:
    path = Path(args.file)
    with path.open("rb") as f:
        files: dict[str, Any] = {"file": (path.name, f, "application/octet-stream")}
        images = open(args.images, "rb") if args.images else None  # noqa: SIM115 - closed below
        try:
            if images is not None:
                files["images"] = (Path(args.images).name, images, "application/octet-stream")
            data = {k: v for k, v in (("name", args.name), ("skill", args.skill)) if v} or None
            headers = {"Idempotency-Key": f"cli-{uuid.uuid4()}"}
            ds = api.call("POST", "/v1/datasets", files=files, data=data, headers=headers, timeout=None).json()
        finally:
            if images is not None:
                images.close()
    if not args.wait:
        _print_json(ds)
        return 0
    _note(f"dataset {ds['id']} uploaded; ingest job {ds['job_id']}")
    return _wait_then_show(api, ds["job_id"], f"/v1/datasets/{ds['id']}", args.interval)


def _all_pages(api: Api, path: str) -> list[dict[str, Any]]:
    items, after = [], None
    while True:
        page = api.get(path, params={"limit": 100} | ({"after": after} if after else {}))
        items += page["data"]
        if not page["has_more"] or not page["data"]:
            return items
        after = page["data"][-1]["id"]


@command
def cmd_datasets_list(api: Api, args: argparse.Namespace) -> int:
    items = _all_pages(api, "/v1/datasets")
    if args.json:
        _print_json(items)
        return 0
    print(f"{'ID':<28} {'STATUS':<8} {'SAMPLES':>8} {'IMAGES':>7}  NAME")
    for d in items:
        print(f"{d['id']:<28} {d['status']:<8} {d['num_samples']:>8} {d['num_images']:>7}  {d['name']}")
    return 0


def _eval_set(text: str) -> dict[str, str]:
    dataset_id, sep, skill = text.partition(":")
    if not sep or not dataset_id or not skill:
        raise argparse.ArgumentTypeError(f"--eval-set must be DATASET_ID:SKILL, got {text!r}")
    return {"dataset_id": dataset_id, "skill": skill}


def _json_arg(text: str) -> dict[str, Any]:
    """Inline JSON or @path/to/file.json."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        value = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--config: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--config must be a JSON object, got {type(value).__name__}")
    return value


@command
def cmd_pools_create(api: Api, args: argparse.Namespace) -> int:
    body = {"name": args.name, "base_model": args.base_model, "model_type": args.model_type,
            "config": args.config, "eval_sets": args.eval_set or []}
    _print_json(api.create("/v1/pools", body))
    return 0


@command
def cmd_pools_show(api: Api, args: argparse.Namespace) -> int:
    _print_json(api.get(f"/v1/pools/{args.pool_id}"))
    return 0


def _budget(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be a count (e.g. 500) or a fraction (e.g. 0.25), got {text!r}") from None


def _wait_then_show(api: Api, job_id: str, resource: str, interval: float) -> int:
    """Watch the job to its end, print the resource it made, exit as the job ended."""
    code = _job_outcome(watch_job(api, job_id, interval=interval))
    _print_json(api.get(resource))
    return code


@command
def cmd_rounds_create(api: Api, args: argparse.Namespace) -> int:
    body = {"dataset_ids": args.dataset, "budget": args.budget, "method": args.method, "seed": args.seed,
            "candidates": args.candidates, "train": not args.no_train, "prune": not args.no_prune}
    rnd = api.create(f"/v1/pools/{args.pool_id}/rounds", body)
    if not args.wait:
        _print_json(rnd)
        return 0
    _note(f"round {rnd['id']} (number {rnd['number']}) started; job {rnd['job_id']}")
    return _wait_then_show(api, rnd["job_id"], f"/v1/rounds/{rnd['id']}", args.interval)


@command
def cmd_rounds_show(api: Api, args: argparse.Namespace) -> int:
    _print_json(api.get(f"/v1/rounds/{args.round_id}"))
    return 0


@command
def cmd_jobs_watch(api: Api, args: argparse.Namespace) -> int:
    return _job_outcome(watch_job(api, args.job_id, interval=args.interval))


def _download_to(response: httpx.Response, f: Any) -> int:
    n = 0
    for chunk in response.iter_bytes(_CHUNK):
        f.write(chunk)
        n += len(chunk)
    return n


@command
def cmd_download_selection(api: Api, args: argparse.Namespace) -> int:
    path = f"/v1/rounds/{args.round_id}/selection"
    with api.http.stream("GET", path, params={"format": args.format}) as r:
        if r.status_code >= 400:
            r.read()
            raise ApiError(r)
        if args.output == "-":
            _download_to(r, sys.stdout.buffer)
            return 0
        out = Path(args.output or f"{args.round_id}-selection.{args.format}")
        part = out.with_name(out.name + ".part")
        with part.open("wb") as f:
            n = _download_to(r, f)
    part.replace(out)  # a complete file or none under the final name
    _note(f"wrote {n} bytes to {out}")
    return 0


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@command
def cmd_download_checkpoint(api: Api, args: argparse.Namespace) -> int:
    """Stream the adapter to FILE.part, resuming it with Range, then verify the sha256 and rename."""
    meta = api.get(f"/v1/checkpoints/{args.checkpoint_id}")
    sha, size = meta["sha256"], meta["size_bytes"]
    out = Path(args.output or f"{args.checkpoint_id}.tar.gz")
    if out.is_file() and out.stat().st_size == size and _sha256_file(out) == sha:
        _note(f"{out} is already complete")
        return 0
    part = out.with_name(out.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset >= size:
        offset = 0  # longer than the blob: not a prefix of it
    headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha}"'} if offset else {}
    with api.http.stream("GET", f"/v1/checkpoints/{args.checkpoint_id}/content", headers=headers) as r:
        if r.status_code >= 400:
            r.read()
            raise ApiError(r)
        resumed = r.status_code == 206
        with part.open("ab" if resumed else "wb") as f:
            n = _download_to(r, f)
    if resumed:
        _note(f"resumed at byte {offset}")
    if _sha256_file(part) != sha:
        part.unlink()
        _note(f"error: {out} does not match sha256 {sha}; the partial file was removed, run again")
        return 1
    part.replace(out)
    _note(f"wrote {out} ({size} bytes, {n} downloaded, sha256 verified)")
    return 0


# ---- argument parsing ---------------------------------------------------------------------------


def _connection_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--api-url", help=f"API base URL (env ADAPTINF_API_URL, default {DEFAULT_API_URL})")
    g.add_argument("--api-key", help="API key (env ADAPTINF_API_KEY)")
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    conn = _connection_options()

    def group(name: str, help: str) -> argparse._SubParsersAction:  # noqa: A002
        return subparsers.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")

    def leaf(parent: argparse._SubParsersAction, name: str, help: str, func: Callable) -> argparse.ArgumentParser:  # noqa: A002
        p = parent.add_parser(name, help=help, parents=[conn])
        p.set_defaults(func=func)
        return p

    def waitable(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="watch the job until it ends")
        p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")

    ds = group("datasets", "Upload and list datasets.")
    p = leaf(ds, "upload", "Upload a dataset file (+ images archive).", cmd_datasets_upload)
    p.add_argument("file", help="LLaVA JSON array or JSONL")
    p.add_argument("--images", help=".zip, .tar or .tar.gz of the images")
    p.add_argument("--name", help="dataset name (default: the file name)")
    p.add_argument("--skill", help="the skill every sample teaches or measures (a record's own 'skill' wins)")
    waitable(p)
    leaf(ds, "list", "List your datasets.", cmd_datasets_list).add_argument("--json", action="store_true")

    pools = group("pools", "Create and inspect pools.")
    p = leaf(pools, "create", "Create a pool.", cmd_pools_create)
    p.add_argument("--name", required=True)
    p.add_argument("--base-model", required=True, help="HF id, local path or preset (tiny-llava)")
    p.add_argument("--model-type", required=True, choices=("llava", "causal-lm"))
    p.add_argument("--config", type=_json_arg, help="partial config as JSON or @file.json")
    p.add_argument("--eval-set", type=_eval_set, action="append", metavar="DATASET_ID:SKILL")
    leaf(pools, "show", "Show a pool.", cmd_pools_show).add_argument("pool_id")

    rounds = group("rounds", "Start and inspect rounds.")
    p = leaf(rounds, "create", "Start a round on new datasets.", cmd_rounds_create)
    p.add_argument("pool_id")
    p.add_argument("--dataset", action="append", required=True, metavar="ID", help="repeat for several")
    p.add_argument("--budget", type=_budget, required=True, help="count (500) or fraction (0.25)")
    p.add_argument("--method", default="adapt-inf", help="adapt-inf, random, score:<expert>, semdedup, full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", choices=("pool", "new"), default="pool",
                   help="select from the whole pool (default) or from this round's new samples only")
    p.add_argument("--no-train", action="store_true", help="select (and prune) only")
    p.add_argument("--no-prune", action="store_true", help="keep the pool unpruned")
    waitable(p)
    leaf(rounds, "show", "Show a round.", cmd_rounds_show).add_argument("round_id")

    jobs = group("jobs", "Follow jobs.")
    p = leaf(jobs, "watch", "Progress bar until the job ends (exit 0 succeeded, 1 failed/cancelled).", cmd_jobs_watch)
    p.add_argument("job_id")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls (default 1)")

    dl = group("download", "Download selections and checkpoints.")
    p = leaf(dl, "selection", "A round's selected samples.", cmd_download_selection)
    p.add_argument("round_id")
    p.add_argument("--format", choices=("jsonl", "json", "tar"), default="jsonl")
    p.add_argument("-o", "--output", help="file (default <round>-selection.<format>; - for stdout)")
    p = leaf(dl, "checkpoint", "A checkpoint's adapter (tar.gz); resumes a partial download.", cmd_download_checkpoint)
    p.add_argument("checkpoint_id")
    p.add_argument("-o", "--output", help="file (default <checkpoint>.tar.gz)")
