"""The lifelong benchmark's rounds, run by the service itself (`bench/lifelong.py`).

Each method is a pool of an embedded `adaptinf serve` (its API, its Celery worker, the real round
stages: prepare, warm-up, feature shards, select, train and evaluate, finalize), driven over HTTP
with the Python client as a user drives it. Nothing of the pipeline is re-implemented here.

Every method takes exactly `steps` optimizer steps per round: the pool's training has
`max_steps = steps` and `epochs = steps` (an epoch is at least one step, so `max_steps` binds).
Methods are service rounds:
- `adapt-inf`, `random`, `semdedup`, `score:<expert>`: that round method, selecting `budget`
  samples from the pool ∪ the round's new data; the pruning methods prune the pool permanently
  (§2.8) after selection;
- `sequential`: `method: full, candidates: new`: the round's new data only;
- `multitask`: `method: full`: every sample in the pool (nothing is pruned): the reference that
  relative gain divides by.

The warm-up adapter is the service's: each pool's first round trains it on a seeded
`warmup_fraction` of that round's candidates with the pool's training settings. Every pool of a
seed has the same candidates, seed and settings, so every method starts from the same warm-up;
`warmup_sha256` lets the benchmark check that they did.
"""
from __future__ import annotations

import copy
import json
import math
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from bench.lifelong_data import BenchItem, LifelongBench, llava_records
from bench.service_calls import list_all, stage_spans
from service.client import Client

METHODS: dict[str, dict[str, Any]] = {
    "adapt-inf": {"method": "adapt-inf", "prune": True},
    "random": {"method": "random", "prune": False},
    "semdedup": {"method": "semdedup", "prune": True},
    "score:ppl": {"method": "score:ppl", "prune": True},
    "sequential": {"method": "full", "candidates": "new", "prune": False},
    "multitask": {"method": "full", "prune": False},
}
SEQUENTIAL, MULTITASK = "sequential", "multitask"
BASE_MODEL = ("tiny-llava", "llava")


@dataclass(frozen=True)
class LifelongConfig:
    """One method's settings for a whole lifelong run.

    Args:
        method: a key of METHODS.
        budget: samples selected per round by pool methods (a count, or a fraction of the candidates).
        steps: optimizer steps per round, for every method (the warm-up's too).
        pool: the pool config (`POST /v1/pools`'s `config`); its training's `epochs` and
            `max_steps` are set from `steps`.
        seed: the rounds' seed (selection, the warm-up's subset).
    """

    method: str
    budget: int | float
    steps: int
    pool: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"LifelongConfig.method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or not self.budget > 0:
            raise ValueError(f"LifelongConfig.budget must be a positive count or fraction, got {self.budget!r}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"LifelongConfig.steps must be a positive int, got {self.steps!r}")

    def pool_config(self) -> dict[str, Any]:
        cfg = copy.deepcopy(self.pool)
        cfg["training"] = {**cfg.get("training", {}), "epochs": self.steps, "max_steps": self.steps}
        return cfg

    def round_body(self, dataset_ids: list[str]) -> dict[str, Any]:
        """`POST /v1/pools/{id}/rounds`'s body; `full` rounds train on every candidate (budget unused)."""
        full = METHODS[self.method]["method"] == "full"
        return {"dataset_ids": dataset_ids, "budget": 1.0 if full else self.budget, "seed": self.seed,
                **METHODS[self.method]}


@dataclass
class RoundRecord:
    """What one round did; `seconds` per stage (prepare, warmup, features, select, train, finalize)."""

    round: int
    new: int  # samples the round's datasets brought, duplicates included
    duplicates: int  # of them, exact duplicates of pool members or of each other, or pruned earlier
    candidates: int
    trained_on: int  # distinct samples the round's training drew from
    pruned: int
    pool_after: int
    experts: dict[str, int]
    steps: int
    train_loss: float
    seconds: dict[str, float]


def upload_items(api: Client, name: str, skill: str, items: Sequence[BenchItem], root: Path, workdir: Path) -> tuple[str, str]:
    """POST one dataset (LLaVA JSON, and a tar of its images under their paths relative to
    `root`); returns (dataset id, ingest job id)."""
    workdir.mkdir(parents=True, exist_ok=True)
    file = workdir / f"{name}.json"
    file.write_text(json.dumps(llava_records(list(items), root)))
    archive = None
    images = [p for it in items for p in it.sample.images]
    if images:
        archive = workdir / f"{name}.tar"
        with tarfile.open(archive, "w") as tar:
            for path in images:
                tar.add(path, arcname=path.relative_to(root).as_posix())
    ds = api.datasets.upload(file, archive, name=name, skill=skill)
    return ds.id, ds.job_id


def wait_ingested(api: Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        job = api.jobs.wait(job_id, timeout=3600)
        if job.status != "succeeded":
            raise RuntimeError(f"ingest job {job_id} {job.status}: {job.error}")


def upload_bench(api: Client, bench: LifelongBench, root: Path, workdir: Path) -> tuple[list[list[str]], list[dict]]:
    """Upload every eval set and training dataset of `bench` (rendered under `root`), wait for
    their ingest; returns (dataset ids per round, the pools' `eval_sets`)."""
    evals = {skill: upload_items(api, f"eval-{skill}", skill, items, root, workdir)
             for skill, items in bench.eval_sets.items()}
    rounds = [[upload_items(api, d.name, d.skill, d.items, root, workdir) for d in datasets] for datasets in bench.rounds]
    wait_ingested(api, [job for _, job in evals.values()] + [job for r in rounds for _, job in r])
    return ([[ds for ds, _ in r] for r in rounds],
            [{"dataset_id": ds, "skill": skill} for skill, (ds, _) in evals.items()])


class ServiceRun:
    """One method's pool in the service; the adapter continues across its rounds."""

    def __init__(self, api: Client, name: str, cfg: LifelongConfig, eval_sets: list[dict]) -> None:
        self.api, self.cfg = api, cfg
        model, model_type = BASE_MODEL
        self.pool_id = api.pools.create(name, model, model_type, config=cfg.pool_config(), eval_sets=eval_sets).id
        self.records: list[RoundRecord] = []
        self._pending: tuple[str, str] | None = None

    def start_round(self, dataset_ids: list[str]) -> None:
        """Send the round (several pools' rounds may run at once: the worker interleaves them)."""
        body = self.cfg.round_body(dataset_ids)
        rnd = self.api.rounds.create(self.pool_id, body.pop("dataset_ids"), body.pop("budget"), **body)
        self._pending = (rnd.id, rnd.job_id)

    def finish_round(self, timeout: float = 4 * 3600) -> RoundRecord:
        """Wait for the round sent last and record it."""
        round_id, job_id = self._pending
        job = self.api.jobs.wait(job_id, timeout=timeout)
        if job.status != "succeeded":
            raise RuntimeError(f"{self.cfg.method} round {len(self.records) + 1}: job {job_id} {job.status}: {job.error}")
        res = self.api.request("GET", f"/v1/rounds/{round_id}").json()["result"]
        spans = stage_spans(list_all(self.api, "/v1/jobs", parent_id=job_id))
        experts = Counter()
        for c in res["clusters"]:
            if c.get("expert"):
                experts[c["expert"]] += int(c["selected"])
        train = res.get("train") or {}
        rec = RoundRecord(
            round=len(self.records), new=res["new_samples"] + res["duplicates"] + res["previously_pruned"],
            duplicates=res["duplicates"] + res["previously_pruned"], candidates=res["candidates"],
            trained_on=res["selected"], pruned=res["pruned"], pool_after=res["pool_size"], experts=dict(experts),
            steps=int(train.get("steps") or 0), train_loss=float(train.get("mean_loss") or math.nan),
            seconds={k: round(b - a, 3) for k, (a, b) in spans.items()},
        )
        self.records.append(rec)
        self._pending = None
        return rec

    def run_round(self, dataset_ids: list[str]) -> RoundRecord:
        self.start_round(dataset_ids)
        return self.finish_round()

    def accuracy(self, skills: list[str]) -> tuple[list[list[float]], list[float]]:
        """(every round's accuracy per skill, the base model's), columns in `skills` order; NaN
        where a skill has no score."""
        m = self.api.request("GET", f"/v1/pools/{self.pool_id}/metrics").json()
        col = {s: i for i, s in enumerate(m["skills"])}

        def pick(row: dict[str, Any] | list) -> list[float]:
            get = (lambda s: row.get(s)) if isinstance(row, dict) else (lambda s: row[col[s]] if s in col else None)
            return [math.nan if get(s) is None else float(get(s)) for s in skills]

        return [pick(r) for r in m["accuracy"]], pick((m.get("base") or {}).get("accuracy") or {})

    def pool_size(self) -> int:
        return int(self.api.request("GET", f"/v1/pools/{self.pool_id}").json()["size"])

    def warmup_sha256(self) -> str | None:
        """The sha256 of the pool's warm-up adapter (None: no warm-up checkpoint)."""
        rows = list_all(self.api, "/v1/checkpoints", pool_id=self.pool_id)
        warm = [c for c in rows if c.get("kind") == "warmup"]
        return warm[0]["sha256"] if warm else None

