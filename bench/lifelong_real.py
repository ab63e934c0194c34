"""The lifelong benchmark on a real pretrained model and real images, run through the service itself.

It starts an embedded `adaptinf serve` in a temporary data directory and talks to it only over
HTTP with the Python client: per seed it uploads the datasets of `bench/real_data.py` (five
skills over four rounds, one rare, near-duplicates mixed in, 200 held-out items per skill), makes
one pool per method on `smol-llava` with every skill's eval set, runs the rounds, and reads each
pool's lifelong metrics from `GET /v1/pools/{id}/metrics` (relative gain against the seed's
multitask pool). The statistics are `bench/lifelong.py`'s: Student-t intervals over seeds and
differences paired by seed.

Methods, as service rounds (every pool has the same config: the same warm-up, LoRA and the same
`training.max_steps` per round):
- `adapt-inf`: `method: adapt-inf`, pruning on;
- `random`: uniform over the pool, no pruning;
- `semdedup`: pruning on, then uniform selection among the survivors;
- `score:ppl`: pruning on, one expert (log perplexity) in every cluster;
- `sequential`: `method: full, candidates: new`: each round's new data only;
- `multitask`: `method: full`: everything seen so far, unpruned; the relative-gain reference.

    python bench/lifelong_real.py --quick     # smoke run: 1 seed, 2 rounds, 3 methods, tiny sizes
    python bench/lifelong_real.py             # 3 seeds, 4 rounds, 200 eval items per skill
    python bench/lifelong_real.py --methods adapt-inf,random,multitask --eval-per-skill 40 ...  # a smaller run

The data comes from installed packages only (`make bench-data`). Prints per-round progress, the
tables, then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lifelong_loop import METHODS
from bench.lifelong_stats import mean_ci, paired_ci
from bench.lifelong_tables import print_tables
from bench.real_data import SCHEDULE, RealBenchConfig, build_real_bench
from bench.service_procs import EmbeddedService
from service.client import Client as Api

REFERENCE = "multitask"
# The smoke run's pools: the primary comparison and the reference. Each pool's round costs about a
# minute on a 2-core CPU whatever its size (model loads, five evaluation passes), so all six pools
# over two rounds take 14 minutes, these three 7.
QUICK_METHODS = ("adapt-inf", "random", "multitask")
SUMMARY_METRICS = ("avg_acc", "forgetting", "relative_gain", "backward_transfer", "forward_transfer", "mft", "maa")
METRICS = SUMMARY_METRICS + ("rare_acc",)
DONE = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class RealSettings:
    """Everything that sizes a run. `full` is the issue's minimum; `quick` the smoke run."""

    data: RealBenchConfig
    rounds: int  # the first `rounds` rounds of the schedule
    budget: int
    steps: int
    batch_size: int
    # measured on smol-llava: 24 steps of 4 at 2e-3 on round 1's data take clothing from 0 to 0.15
    # and the VQA questions from 0 to 0.35 (20 held-out items each); no other rate was tried
    lr: float = 2e-3
    smoke: bool = False  # 2 clusters and 256-dim features, for the smoke run's handful of samples

    @classmethod
    def full(cls, seed: int) -> "RealSettings":
        # 64 steps of 8 per round: two passes over a 256-sample budget.
        return cls(data=RealBenchConfig(seed=seed), rounds=len(SCHEDULE), budget=256, steps=64, batch_size=8)

    @classmethod
    def quick(cls, seed: int) -> "RealSettings":
        data = RealBenchConfig(seed=seed, scenes_per_dataset=4, max_copies=2, eval_per_skill=4, rare_fraction=0.34)
        return cls(data=data, rounds=2, budget=4, steps=2, batch_size=4, smoke=True)

    def pool_config(self) -> dict[str, Any]:
        """The same for every method: LoRA r = 16 on every linear module of the decoder, features
        from the last layer's gradients at the service's default 8192 dimensions."""
        seed, quick = self.data.seed, self.smoke
        return {
            "lora": {"r": 16, "alpha": 32, "seed": seed},
            "features": {"batch_size": 8, "seed": seed, **({"proj_dim": 256} if quick else {})},
            "selection": {"n_clusters": 2, "n_strata": 4} if quick else {"n_clusters": 10},
            "training": {"lr": self.lr, "batch_size": self.batch_size, "epochs": 100, "max_steps": self.steps,
                         "seed": seed},
        }


# ---- the service ----------------------------------------------------------------------------------

def start_service(data_dir: Path, preset_cache: Path, device: str) -> EmbeddedService:
    """`adaptinf serve` with the presets' cache, the device, and a model cache holding every pool's model."""
    # every method's round is queued at once (the default allows an owner 4 active rounds)
    return EmbeddedService(data_dir, env={"ADAPTINF_PRESET_CACHE": str(preset_cache), "ADAPTINF_DEVICE": device,
                                          "ADAPTINF_MODEL_CACHE_SIZE": str(len(METHODS) + 1),
                                          "ADAPTINF_MAX_ACTIVE_ROUNDS_PER_OWNER": str(len(METHODS))})


def upload(api: Api, directory: Path, entry: dict[str, Any]) -> tuple[str, str]:
    """POST one dataset (its JSON and image tar); returns (dataset id, ingest job id)."""
    files = {"file": (entry["file"], (directory / entry["file"]).read_bytes(), "application/json")}
    if "images" in entry:
        files["images"] = (entry["images"], (directory / entry["images"]).read_bytes(), "application/x-tar")
    ds = api.request("POST", "/v1/datasets", files=files, data={"name": entry["name"], "skill": entry["skill"]},
                  timeout=None).json()
    return ds["id"], ds["job_id"]


def wait_jobs(api: Api, job_ids: list[str], poll: float = 2.0, timeout: float = 4 * 3600) -> list[dict[str, Any]]:
    """Wait until every job ended; raises if one did not succeed or `timeout` seconds pass."""
    jobs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(jobs) < len(job_ids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(job_ids) - len(jobs)} of {len(job_ids)} jobs still running after {timeout:.0f} s")
        for j in job_ids:
            if j not in jobs:
                job = api.request("GET", f"/v1/jobs/{j}").json()
                if job["status"] in DONE:
                    jobs[j] = job
        if len(jobs) < len(job_ids):
            time.sleep(poll)
    failed = [j for j in jobs.values() if j["status"] != "succeeded"]
    if failed:
        raise RuntimeError(f"job {failed[0]['id']} {failed[0]['status']}: {failed[0].get('error')}")
    return [jobs[j] for j in job_ids]


# ---- one seed ------------------------------------------------------------------------------------

def run_seed(svc: EmbeddedService, seed: int, st: RealSettings, methods: list[str], workdir: Path) -> dict[str, Any]:
    api = svc.api
    data_dir = workdir / f"data-{seed}"
    manifest = build_real_bench(st.data, data_dir)
    uploads = {e["name"]: upload(api, data_dir / "eval", e) for e in manifest["eval"]}
    for t, entries in enumerate(manifest["rounds"]):
        uploads |= {e["name"]: upload(api, data_dir / f"round{t + 1}", e) for e in entries}
    wait_jobs(api, [job for _, job in uploads.values()])
    eval_sets = [{"dataset_id": uploads[e["name"]][0], "skill": e["skill"]} for e in manifest["eval"]]
    pools = {}
    for m in methods:
        pools[m] = api.pools.create(f"real-{m}-s{seed}", "smol-llava", "llava", config=st.pool_config(),
                                    eval_sets=eval_sets).id
    round_wall_s = []
    for t, entries in enumerate(manifest["rounds"][:st.rounds]):
        dataset_ids = [uploads[e["name"]][0] for e in entries]
        started = time.perf_counter()
        # every method's round at once: the worker interleaves their stages
        rounds = {m: api.rounds.create(pools[m], dataset_ids, st.budget, seed=seed, **METHODS[m]).model_dump(mode="json")
                  for m in methods}
        for m in methods:
            wait_jobs(api, [rounds[m]["job_id"]])
            res = api.request("GET", f"/v1/rounds/{rounds[m]['id']}").json().get("result") or {}
            loss = (res.get("train") or {}).get("mean_loss")
            acc = {k: round(v["accuracy"], 2) for k, v in (res.get("eval") or {}).items() if v.get("accuracy") is not None}
            print(f"  [seed {seed} {m}] round {t + 1}: selected {res.get('selected')} of {res.get('candidates')}, "
                  f"pruned {res.get('pruned')}, train loss {loss if loss is None else round(loss, 3)}, accuracy {acc}",
                  flush=True)
        round_wall_s.append(round(time.perf_counter() - started, 1))
        print(f"  [seed {seed}] round {t + 1} of every method: {round_wall_s[-1]:.0f}s", flush=True)
    reference = pools.get(REFERENCE)
    out = {}
    for m in methods:
        q = f"?reference_pool_id={reference}" if reference else ""
        metrics = api.request("GET", f"/v1/pools/{pools[m]}/metrics{q}").json()
        row = dict(zip(metrics["skills"], metrics["accuracy"][-1])) if metrics["accuracy"] else {}
        status, rare = {p["skill"]: p["status"] for p in metrics["per_skill"]}, manifest["rare_skill"]
        out[m] = {**{k: metrics["summary"].get(k) for k in SUMMARY_METRICS},
                  "rare_acc": row.get(rare) if status.get(rare) == "arrived" else None, "accuracy": metrics["accuracy"],
                  "skills": metrics["skills"], "base": (metrics.get("base") or {}).get("accuracy"),
                  "pool_size": api.request("GET", f"/v1/pools/{pools[m]}").json().get("size"), "round_wall_s": round_wall_s}
    return out


def summarize(per_seed: dict[int, dict[str, dict]], methods: list[str]) -> dict[str, Any]:
    seeds = sorted(per_seed)
    rows = {m: [per_seed[s][m] for s in seeds] for m in methods}
    return {
        "methods": {m: {k: mean_ci([r[k] for r in rows[m]]) for k in METRICS} for m in methods},
        "paired": {f"adapt-inf-vs-{o}": {k: paired_ci([r[k] for r in rows["adapt-inf"]], [r[k] for r in rows[o]])
                                         for k in METRICS}
                   for o in methods if o != "adapt-inf" and "adapt-inf" in methods},
        # fixed before any run, as in bench/lifelong.py
        "primary": {"pair": "adapt-inf-vs-random", "metric": "avg_acc"},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke-test sizes: 1 seed, 2 rounds, 4 eval items per skill")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; --quick: 1)")
    p.add_argument("--eval-per-skill", type=int, help="held-out items per skill (default 200)")
    p.add_argument("--scenes", type=int, help="distinct images per training dataset (default 48)")
    p.add_argument("--budget", type=int, help="samples selected per round (default 256)")
    p.add_argument("--steps", type=int, help="optimizer steps per round, every method (default 64)")
    p.add_argument("--batch-size", type=int, help="training batch size (default 8)")
    p.add_argument("--rounds", type=int, choices=range(1, len(SCHEDULE) + 1), metavar="N",
                   help=f"run the first N rounds of the schedule (default {len(SCHEDULE)}; --quick: 2)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated (default: all, {','.join(METHODS)}; --quick: {','.join(QUICK_METHODS)})")
    p.add_argument("--device", default="auto", help="the worker's device (ADAPTINF_DEVICE)")
    p.add_argument("--preset-cache", type=Path, default=Path.home() / ".cache" / "adaptinf" / "presets",
                   help="where smol-llava is built once and reused across runs")
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else list(QUICK_METHODS if args.quick else METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; known: {', '.join(METHODS)}")
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)

    def settings(seed: int) -> RealSettings:
        st = RealSettings.quick(seed) if args.quick else RealSettings.full(seed)
        data = replace(st.data, **{k: v for k, v in (("eval_per_skill", args.eval_per_skill),
                                                    ("scenes_per_dataset", args.scenes)) if v is not None})
        sizes = (("budget", args.budget), ("steps", args.steps), ("batch_size", args.batch_size), ("rounds", args.rounds))
        return replace(st, data=data, **{k: v for k, v in sizes if v is not None})

    started = time.perf_counter()
    per_seed: dict[int, dict[str, dict]] = {}
    # SIGTERM unwinds like Ctrl-C, so the embedded service is stopped and its directory removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="lifelong-real-") as tmp:
        root = Path(tmp)
        svc = start_service(root / "service", args.preset_cache, args.device)
        try:
            for seed in range(n_seeds):
                per_seed[seed] = run_seed(svc, seed, settings(seed), methods, root)
                # each seed's figures as soon as they exist: a long run stopped early keeps them
                print(json.dumps({"seed": seed, "methods": per_seed[seed]}, allow_nan=False), flush=True)
        except BaseException:
            log = svc.log_path.read_text(errors="replace")[-4000:]
            print(f"--- the service's log (last 4000 characters) ---\n{log}", file=sys.stderr)
            raise
        finally:
            svc.stop()
    st0 = settings(0)
    summary = {
        "model": "smol-llava", "seeds": list(range(n_seeds)), **summarize(per_seed, methods),
        "skills": st0.data.skills, "rare_skill": st0.data.rare_skill, "eval_per_skill": st0.data.eval_per_skill,
        "rounds": st0.rounds, "budget": st0.budget, "steps_per_round": st0.steps, "pool_config": st0.pool_config(),
        "data": asdict(st0.data), "argv": sys.argv[1:] if argv is None else argv,
        "per_seed": {str(s): per_seed[s] for s in per_seed}, "quick": args.quick,
        "total_wall_s": round(time.perf_counter() - started, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    print_tables(summary)
    print(json.dumps(summary, allow_nan=False))
    return summary


if __name__ == "__main__":
    main()
