"""The client commands' argument tree: `adaptinf datasets|pools|rounds|jobs|checkpoints ...`,
built on the typed client (service/client).

Why argparse and not typer: the `adaptinf` tree is one parser, and its operator half (serve,
worker, reap, migrate, keys, gc, models: service/cli/run.py and admin.py) is argparse, called as
`service.cli.main([...])` by scripts and tests that rely on its exit codes (2 on a usage error).
Typer would either put a second parser (click) under half of the tree, with its own help and error
style, or rewrite the operator commands that other parts of the service change. Speed is not the
reason (measured: importing typer adds ~17 ms to httpx + pydantic). argparse parses every
argument; nothing here is parsed by hand.

Connection: --api-url / --api-key, or ADAPTINF_API_URL / ADAPTINF_API_KEY. Output: a table or
summary on stdout, or JSON with --json; progress and notes on stderr. Exit codes: 0 success,
1 the job or download failed, 2 the API refused the request (its problem+json as one line),
could not be reached, or the input was bad.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.statuses import STATUSES
from service.cli import commands as c

DEFAULT_API_URL = "http://127.0.0.1:8000"
URL_SETTING = "--api-url or ADAPTINF_API_URL"
KEY_SETTING = "--api-key or ADAPTINF_API_KEY"


def connected(fn: Callable[..., int]) -> Callable[[argparse.Namespace], int]:
    """Build the Client from the args; every client or input error becomes one stderr line, exit 2."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from service.cli.output import note
        from service.client import ApiError, ApiUnreachable, Client, ClientError

        url = args.api_url or os.environ.get("ADAPTINF_API_URL") or DEFAULT_API_URL
        key = args.api_key or os.environ.get("ADAPTINF_API_KEY")
        if not key:
            note(f"error: no API key: set {KEY_SETTING} (an operator makes one with `adaptinf keys create`)")
            return 2
        client = Client(url, key)
        try:
            return fn(client, args)
        except ApiUnreachable as exc:
            note(f"error: cannot reach the API at {client.url} (set {URL_SETTING}): {exc.cause or type(exc.cause).__name__}")
        except ApiError as exc:
            hint = ""
            if exc.status == 401:
                hint = f" (check {KEY_SETTING})"
            elif exc.code == "not_problem_json":
                hint = f" (is {client.url} the adaptinf API? set {URL_SETTING})"
            note(f"error: {exc}{hint}")
        except ClientError as exc:
            note(f"error: {exc}")
        except BrokenPipeError:
            raise  # the reader left: service.cli.main ends quietly
        except OSError as exc:  # a file to upload or write: missing, unreadable, a full disk
            note(f"error: {exc.strerror or exc}: {exc.filename}" if exc.filename else f"error: {exc}")
        except KeyboardInterrupt:
            note("interrupted")
            return 130
        finally:
            client.close()
        return 2

    return run


# ---- argument types: a bad value is argparse's usage error (exit 2), named after the option ----


def _eval_set(text: str) -> dict[str, str]:
    dataset_id, sep, skill = text.partition(":")
    if not sep or not dataset_id or not skill:
        raise argparse.ArgumentTypeError(f"--eval-set must be DATASET_ID:SKILL, got {text!r}")
    return {"dataset_id": dataset_id, "skill": skill}


def _json_object(text: str) -> dict[str, Any]:
    """Inline JSON or @path/to/file.json."""
    try:
        raw = Path(text[1:]).read_text() if text.startswith("@") else text
        value = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--config: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"--config must be a JSON object, got {type(value).__name__}")
    return value


def _budget(text: str) -> int | float:
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--budget must be a count (e.g. 500) or a fraction (e.g. 0.25), got {text!r}") from None


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--interval must be a number of seconds > 0, got {text!r}")
    return value


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number >= 1, got {text!r}")
    return int(text)


def _round_number(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--round must be a round number >= 1, got {text!r}")
    return int(text)


# ---- the tree ----------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection")
    g.add_argument("--api-url", help=f"API base URL (env ADAPTINF_API_URL, default {DEFAULT_API_URL})")
    g.add_argument("--api-key", help="API key (env ADAPTINF_API_KEY)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table or summary")
    return p


def _waitable(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true", help="follow the job to its end, then print a short summary")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between polls (default 1)")


def register(subparsers: argparse._SubParsersAction) -> None:
    common = _common()

    def group(name: str, help: str) -> Callable[..., argparse.ArgumentParser]:  # noqa: A002
        actions = subparsers.add_parser(name, help=help).add_subparsers(
            dest=f"{name}_command", required=True, metavar="ACTION")

        def command(action: str, func: Callable[..., int], help: str, *positional: str,  # noqa: A002
                    aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
            p = actions.add_parser(action, help=help, parents=[common], aliases=list(aliases))
            for arg in positional:
                p.add_argument(arg)
            p.set_defaults(func=connected(func))
            return p

        return command

    ds = group("datasets", "Upload, list, show and delete datasets.")
    p = ds("upload", c.datasets_upload, "Upload a dataset file (+ images archive), or name one with --uri.")
    p.add_argument("file", nargs="?", help="JSON array, JSONL, Parquet, or a .zip/.tar(.gz) of a Hugging Face "
                   "save_to_disk folder")
    p.add_argument("--images", help=".zip, .tar or .tar.gz of the images")
    p.add_argument("--uri", help="instead of FILE: s3://bucket/key or file:///path the server reads itself "
                   "(under its ADAPTINF_INGEST_ALLOWED_PREFIXES)")
    p.add_argument("--images-uri", help="with --uri: the images archive's s3:// or file:// URI")
    p.add_argument("--format", choices=["json", "jsonl", "parquet", "hf"], help="with --uri: the format "
                   "(default: sniffed; a folder is a Hugging Face dataset)")
    p.add_argument("--name", help="dataset name (default: the file name)")
    p.add_argument("--skill", help="the skill every sample teaches or measures (a record's own 'skill' wins)")
    _waitable(p)
    ds("list", c.datasets_list, "List your datasets.")
    ds("show", c.datasets_show, "Show a dataset.", "dataset_id")
    p = ds("samples", c.datasets_samples, "List a dataset's samples.", "dataset_id")
    p.add_argument("--limit", type=_limit, help="at most this many (default: all)")
    ds("delete", c.datasets_delete, "Delete a dataset (refused while a pool uses it).", "dataset_id")

    pools = group("pools", "Create, list and inspect pools.")
    p = pools("create", c.pools_create, "Create a pool.")
    p.add_argument("--name", required=True)
    p.add_argument("--base-model", required=True, help="HF id, local path or preset (tiny-llava)")
    p.add_argument("--model-type", required=True, choices=("llava", "causal-lm"))
    p.add_argument("--config", type=_json_object, help="partial config as JSON or @file.json")
    p.add_argument("--eval-set", type=_eval_set, action="append", metavar="DATASET_ID:SKILL")
    pools("list", c.pools_list, "List your pools.")
    pools("show", c.pools_show, "Show a pool.", "pool_id")
    pools("add-eval-set", c.pools_add_eval_set, "Add a held-out evaluation set.", "pool_id", "dataset_id", "skill")
    pools("clusters", c.pools_clusters, "The clusters of the pool's latest round.", "pool_id")
    p = pools("metrics", c.pools_metrics, "Lifelong metrics: accuracy per round and skill, forgetting.", "pool_id")
    p.add_argument("--reference-pool", help="pool id for the relative gain")
    pools("delete", c.pools_delete, "Delete a pool, its rounds and checkpoints (refused while a round runs).",
          "pool_id")
    pools("remove-dataset", c.pools_remove_dataset, "Take a dataset's samples out of a pool.", "pool_id", "dataset_id")
    pools("remove-eval-set", c.pools_remove_eval_set, "Stop evaluating a pool on a dataset.", "pool_id", "dataset_id")
    p = pools("index", c.pools_index, "Download the pool's FAISS index (config pool_index) for your own "
              "nearest-neighbour searches; resumes a partial file, checks the sha256.", "pool_id")
    p.add_argument("-o", "--output", help="file (default <pool>-round<N>.faiss)")
    p.add_argument("--round", type=_round_number, dest="round_number", help="that round's version (default: the latest)")

    rounds = group("rounds", "Start, list and inspect rounds.")
    p = rounds("start", c.rounds_start, "Start a round on new datasets.", "pool_id", aliases=("create",))
    p.add_argument("--dataset", action="append", required=True, metavar="ID", help="repeat for several")
    p.add_argument("--budget", type=_budget, required=True, help="count (500) or fraction (0.25)")
    p.add_argument("--method", default="adapt-inf", help="adapt-inf, random, score:<expert>, semdedup, full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", choices=("pool", "new"), default="pool",
                   help="select from the whole pool (default) or from this round's new samples only")
    p.add_argument("--no-train", action="store_true", help="select (and prune) only")
    p.add_argument("--no-prune", action="store_true", help="keep the pool unpruned")
    _waitable(p)
    rounds("list", c.rounds_list, "List a pool's rounds.", "pool_id")
    rounds("show", c.rounds_show, "Show a round and its results.", "round_id")
    p = rounds("download", c.rounds_download, "Download a round's selected samples.", "round_id")
    p.add_argument("--format", choices=("jsonl", "json", "tar"), default="jsonl")
    p.add_argument("-o", "--output", help="file (default <round>-selection.<format>; - for stdout)")

    jobs = group("jobs", "List, follow and cancel jobs.")
    p = jobs("list", c.jobs_list, "List your jobs.")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--kind", help="ingest, round, ...")
    p.add_argument("--parent", help="only the children of this job")
    jobs("show", c.jobs_show, "Show a job.", "job_id")
    jobs("events", c.jobs_events, "A job's event log.", "job_id")
    jobs("cancel", c.jobs_cancel, "Cancel a job.", "job_id")
    p = jobs("watch", c.jobs_watch, "Follow a job to its end (exit 0 succeeded, 1 failed/cancelled).", "job_id")
    p.add_argument("--interval", type=_interval, default=1.0, help="seconds between polls (default 1)")

    ckpts = group("checkpoints", "List, show and download checkpoints.")
    p = ckpts("list", c.checkpoints_list, "List your checkpoints.")
    p.add_argument("--pool", help="only this pool's")
    ckpts("show", c.checkpoints_show, "Show a checkpoint: training and eval metrics.", "checkpoint_id")
    p = ckpts("download", c.checkpoints_download, "Download the adapter (tar.gz); resumes a partial file.",
              "checkpoint_id")
    p.add_argument("-o", "--output", help="file (default <checkpoint>.tar.gz)")

    # The 0.1 names, kept for scripts: `download selection|checkpoint`.
    dl = group("download", "Download selections and checkpoints (same as rounds/checkpoints download).")
    p = dl("selection", c.rounds_download, "A round's selected samples.", "round_id")
    p.add_argument("--format", choices=("jsonl", "json", "tar"), default="jsonl")
    p.add_argument("-o", "--output", help="file (default <round>-selection.<format>; - for stdout)")
    p = dl("checkpoint", c.checkpoints_download, "A checkpoint's adapter (tar.gz).", "checkpoint_id")
    p.add_argument("-o", "--output", help="file (default <checkpoint>.tar.gz)")
