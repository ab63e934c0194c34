"""The API under steady read load while a round runs: job polls and listings at a fixed rate, per mode.

Bounded and loopback only: `--rps` requests per second for `--seconds`, to a service this script
starts on 127.0.0.1. Per mode (`embedded`: `adaptinf serve` on SQLite with its round and ingest workers;
`postgres`: PostgreSQL and Redis of this machine, the API under uvicorn and two workers) it uploads
`--n` records, makes a pool on `tiny-causal-lm` with the default config, starts a round at
`--budget` and, once the round's job runs, sends this mix in turn:

    GET /v1/jobs/{the round's job}   GET /v1/jobs?limit=20   GET /v1/pools/{id}/rounds   GET /v1/datasets

Open loop: request i is due at t0 + i/rps whatever happened before, and its latency is measured
from that due time, so a stall counts for every request that should have gone out during it
(no coordinated omission; see bench/openloop.py). Anything but a 200 is an error. The round is
cancelled once the load ends; the stages it went through meanwhile are reported.

    python bench/load.py                                  # 100 req/s for 60 s, both modes (~4 minutes)
    python bench/load.py --rps 20 --seconds 3 --n 300 --modes embedded

Prints a progress log on stderr and one JSON line: per mode (`embedded`, `postgres`) `errors`,
`p50_ms`, `p99_ms`, `max_ms`, `requests`, `achieved_rps`, `by_path`, `round_stages` and
`round_running_at_end`, `load_avg_1m`; then `targets` and `targets_met` (0 errors and p99 at most
50 ms in every mode run).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.openloop import Poller  # noqa: E402
from bench.service_calls import DONE, create, list_all, log, ts, upload_dataset, wait_job  # noqa: E402
from bench.service_data import write_dataset  # noqa: E402
from bench.service_procs import DistributedService, EmbeddedService  # noqa: E402

TARGETS = {"errors": 0, "p99_ms": 50.0}
# Redis database of the postgres mode: flushed at start, so not one the tests' fixtures use (7, 11)
# nor bench/service_scale.py's (13), which CI may run at the same time.
REDIS_URL = "redis://127.0.0.1:6379/12"


def wait_running(api: Any, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """The job once it runs (or has already ended: a tiny round may)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.request("GET", f"/v1/jobs/{job_id}").json()
        if job["status"] == "running" or job["status"] in DONE:
            return job
        time.sleep(0.2)
    raise RuntimeError(f"round job {job_id} did not start within {timeout:.0f} s")


def run_mode(svc: Any, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    api = svc.api
    ds = upload_dataset(api, data, "load")
    wait_job(api, ds["job_id"], "ingest")
    pool = create(api, "/v1/pools", {"name": "load", "base_model": "tiny-causal-lm", "model_type": "causal-lm"})
    rnd = create(api, f"/v1/pools/{pool['id']}/rounds", {"dataset_ids": [ds["id"]], "budget": args.budget})
    wait_running(api, rnd["job_id"])
    mix = {"job": f"/v1/jobs/{rnd['job_id']}", "jobs": "/v1/jobs?limit=20",
           "rounds": f"/v1/pools/{pool['id']}/rounds", "datasets": "/v1/datasets"}
    log(f"{svc.mode}: {args.rps:g} req/s for {args.seconds:g} s")
    key = api.http.client.headers["Authorization"].split()[-1]
    t0 = time.time()
    with Poller(svc.url, key, mix, args.rps, threads=args.threads) as poller:
        time.sleep(args.seconds)
    t1 = time.time()
    out = poller.report(t1 - t0)
    job = api.request("GET", f"/v1/jobs/{rnd['job_id']}").json()
    out["round_running_at_end"] = job["status"] not in DONE
    # the stages that ran during the load window
    children = list_all(api, "/v1/jobs", parent_id=rnd["job_id"])
    out["round_stages"] = sorted({c["kind"].split(".", 1)[1] for c in children
                                  if c["started_at"] and ts(c["started_at"]) <= t1
                                  and (c["finished_at"] is None or ts(c["finished_at"]) >= t0)})
    if out["round_running_at_end"]:
        api.request("POST", f"/v1/jobs/{rnd['job_id']}/cancel")
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    log(f"{svc.mode}: {out['requests']} requests, {out['errors']} errors, p50 {out['p50_ms']} ms, "
        f"p99 {out['p99_ms']} ms, stages {out['round_stages']}")
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rps", type=float, default=100.0, help="requests per second, all paths together")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the load lasts")
    ap.add_argument("--threads", type=int, default=4, help="client threads sharing the schedule")
    ap.add_argument("--n", type=int, default=20_000, help="records in the round's dataset (the round must outlast the load)")
    ap.add_argument("--budget", type=float, default=0.05, help="the round's budget, a fraction of the candidates")
    ap.add_argument("--modes", default="embedded,postgres", help="comma-separated: embedded, postgres")
    ap.add_argument("--workers", type=int, default=2, help="workers of the postgres mode")
    ap.add_argument("--redis-url", default=REDIS_URL, help="the postgres mode's Redis database (flushed)")
    ap.add_argument("--torch-threads", type=int, default=1, help="ADAPTINF_TORCH_THREADS of every worker")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"embedded", "postgres"}:
        ap.error(f"--modes takes embedded and/or postgres, got {args.modes!r}")
    report: dict[str, Any] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the services stop
    env = {"ADAPTINF_TORCH_THREADS": str(args.torch_threads)}
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="load-") as tmp:
        root = Path(tmp)
        data = root / "load.jsonl"
        write_dataset(data, args.n, seed=0)
        for mode in modes:
            log(f"mode {mode}")
            if mode == "embedded":
                svc = EmbeddedService(root / mode, env=env)
            else:
                svc = DistributedService(root / mode, workers=args.workers, redis_url=args.redis_url, env=env)
            with svc:
                report[mode] = run_mode(svc, data, args)
    report["rps"], report["seconds"], report["cpu_count"] = args.rps, args.seconds, os.cpu_count()
    report["targets"] = TARGETS
    report["targets_met"] = {"errors": all(report[m]["errors"] <= TARGETS["errors"] for m in modes),
                             "p99_ms": all(report[m]["p99_ms"] is not None and report[m]["p99_ms"] <= TARGETS["p99_ms"]
                                              for m in modes)}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
