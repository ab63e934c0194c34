"""A round over a dataset holding a few very long answers, at the default pool config, in embedded
mode: the worker's peak resident memory, held to 1.5 GB.

Attention memory grows with the square of a sample's tokens, so one 16,000-character answer
decides the worker's peak unless `features.max_length` (4096 tokens by default) cuts it. This
uploads `--n` ordinary records plus `--long` records whose answer is `--chars` characters, makes a
pool on `tiny-causal-lm` with no config (every default), and runs one round at `--budget` (1.0 by
default, so the long samples go through every stage, training included). Memory is sampled four times a second
(bench/service_procs.RssSampler): VmRSS of the worker and its RssAnon (its own memory).

    python bench/long_sample.py                   # 200 records + 1 of 16,000 characters (a few minutes)

Prints a progress log on stderr and one JSON line: `worker_peak_rss_gb`, `worker_peak_anon_gb`,
`stages` (peak VmRSS per stage, GB), the round's counts, `target` and `target_met`.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.service_calls import create, list_all, stage_spans, upload_dataset, wait_job  # noqa: E402
from bench.service_data import WORDS, write_dataset  # noqa: E402
from bench.service_procs import GB, EmbeddedService, RssSampler  # noqa: E402

TARGET_GB = 1.5


def long_text(chars: int, seed: int) -> str:
    """Exactly `chars` characters of words."""
    rng, words, size = random.Random(seed), [], 0
    while size < chars:
        words.append(rng.choice(WORDS))
        size += len(words[-1]) + 1
    return " ".join(words)[:chars]


def write_with_long(path: Path, n: int, long: int, chars: int) -> None:
    """`n` ordinary records, then `long` whose answer is `chars` characters long."""
    write_dataset(path, n, seed=0)
    with open(path, "a") as f:
        for i in range(long):
            f.write(json.dumps({"id": f"long{i}", "conversations": [
                {"from": "human", "value": "Tell me everything you know, at length?"},
                {"from": "gpt", "value": long_text(chars, seed=i)}]}) + "\n")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="ordinary records")
    ap.add_argument("--long", type=int, default=1, help="records with a long answer")
    ap.add_argument("--chars", type=int, default=16_000, help="characters of each long answer")
    ap.add_argument("--budget", type=float, default=1.0, help="the round's budget, a fraction of the candidates")
    ap.add_argument("--torch-threads", type=int, default=1, help="ADAPTINF_TORCH_THREADS of the worker")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the service stops
    start = time.time()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="long-sample-") as tmp:
        root = Path(tmp)
        data = root / "long.jsonl"
        write_with_long(data, args.n, args.long, args.chars)
        with EmbeddedService(root / "embedded", env={"ADAPTINF_TORCH_THREADS": str(args.torch_threads)}) as svc:
            api, rss = svc.api, RssSampler(svc)
            rss.start()
            try:
                ds = upload_dataset(api, data, "long")
                wait_job(api, ds["job_id"], "ingest")
                pool = create(api, "/v1/pools", {"name": "long", "base_model": "tiny-causal-lm",
                                                 "model_type": "causal-lm"})
                rnd = create(api, f"/v1/pools/{pool['id']}/rounds", {"dataset_ids": [ds["id"]], "budget": args.budget})
                wait_job(api, rnd["job_id"], "round", poll=2.0)
                spans = stage_spans(list_all(api, "/v1/jobs", parent_id=rnd["job_id"]))
                result = api.request("GET", f"/v1/rounds/{rnd['id']}").json()["result"] or {}
                config = api.request("GET", f"/v1/pools/{pool['id']}").json()["config"]
            finally:
                rss.halt.set()
                rss.join()
    peak = round(max((s[2] for s in rss.samples), default=0) / GB, 3)
    report = {
        "records": args.n + args.long, "budget": args.budget, "long_records": args.long, "long_chars": args.chars,
        "base_model": "tiny-causal-lm", "features_max_length": config["features"]["max_length"],
        "worker_peak_rss_gb": peak,
        "worker_peak_anon_gb": round(max((s[3] for s in rss.samples), default=0) / GB, 3),
        "stages": {kind: rss.peak(*span, "worker") for kind, span in spans.items()},
        "round": {k: result.get(k) for k in ("candidates", "selected", "pool_size")},
        "torch_threads": args.torch_threads, "wall_s": round(time.time() - start, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "target": {"worker_peak_rss_gb": TARGET_GB}, "target_met": peak <= TARGET_GB,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
