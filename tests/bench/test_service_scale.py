"""`bench/service_scale.py` at a tiny size, in both modes: a real service, a real round, its JSON line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.service_scale import LINEAR_STAGES, stage_spans, write_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_small_run_in_both_modes_reports_every_stage(tmp_path):
    argv = ["--n", "400", "--budget", "0.05", "--upload-gb", "0.002", "--upload-format", "json", "--poll-rps", "10",
            "--max-steps", "2", "--workdir", str(tmp_path)]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "service_scale.py"), *argv],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report["modes"]) == {"embedded", "postgres"}
    for mode in report["modes"].values():
        stages = mode["stages"]
        assert set(LINEAR_STAGES) | {"warmup", "features", "train"} <= set(stages)
        assert all(st["seconds"] >= 0 and st["peak_rss_gb"] > 0 for st in stages.values()), stages
        assert all(0 < st["peak_anon_gb"] <= st["peak_rss_gb"] for st in stages.values() if st["process"] == "worker")
        assert mode["num_samples"] == 400 and mode["round"]["selected"] == mode["round"]["budget"] > 0
        assert mode["round"]["duplicates"] > 0  # the 5% exact copies
        assert mode["round"]["candidates"] == 400 - mode["round"]["duplicates"]
        assert all(size > 0 for size in stages["download"]["bytes"].values())
        assert mode["poll"]["errors"] == 0 and mode["poll"]["requests"] > 10
        assert mode["upload_1gb_api_rss_growth_mb"] is not None and mode["upload_big_status"] == 202
    assert report["poll_p99_ms"] == max(m["poll_p99_ms"] for m in report["modes"].values())
    assert list(tmp_path.iterdir()) == []  # the service directories are removed


def test_stage_spans_cover_every_job_of_a_stage():
    jobs = [{"kind": "round.features", "status": "succeeded", "started_at": "2026-01-01T00:00:10Z",
             "finished_at": "2026-01-01T00:00:20Z"},
            {"kind": "round.features", "status": "succeeded", "started_at": "2026-01-01T00:00:05Z",
             "finished_at": "2026-01-01T00:00:12Z"},
            {"kind": "round.features", "status": "cancelled", "started_at": "2026-01-01T00:00:00Z",
             "finished_at": "2026-01-01T00:01:00Z"},
            {"kind": "round.select", "status": "succeeded", "started_at": "2026-01-01T00:00:21Z",
             "finished_at": "2026-01-01T00:00:24Z"}]
    spans = stage_spans(jobs)
    assert spans["features"][1] - spans["features"][0] == 15 and spans["select"][1] - spans["select"][0] == 3


def test_the_big_upload_is_valid_in_both_formats(tmp_path):
    from bench.service_scale import write_dataset_of_size
    from service.ingest.formats import iter_records

    for fmt in ("jsonl", "json"):
        path = tmp_path / f"big.{fmt}"
        size = write_dataset_of_size(path, 200_000, seed=1, fmt=fmt)
        records = [v for _, _, v in iter_records(path)]
        assert 150_000 < size < 260_000 and len(records) == 200 and all("conversations" in r for r in records)


def test_dataset_has_its_planted_copies(tmp_path):
    path = tmp_path / "d.jsonl"
    write_dataset(path, 2000, seed=3)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    texts = [json.dumps(r["conversations"]) for r in records]
    assert len(records) == 2000 and len({r["id"] for r in records}) == 2000
    assert 0.03 < 1 - len(set(texts)) / len(texts) < 0.07  # ~5% exact copies
