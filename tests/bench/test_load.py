"""`bench/load.py` at a tiny rate, in both modes: a real service, a running round, its JSON line."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_tiny_load_in_both_modes_has_no_errors(tmp_path):
    argv = ["--rps", "20", "--seconds", "3", "--n", "300", "--workdir", str(tmp_path)]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), *argv],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report) >= {"embedded", "postgres", "targets", "targets_met"}
    for mode in ("embedded", "postgres"):
        m = report[mode]
        assert m["errors"] == 0, m
        assert 40 <= m["requests"] <= 61  # 20 req/s for 3 s, open loop: no more than the schedule holds
        assert set(m["by_path"]) == {"job", "jobs", "rounds", "datasets"}
        assert all(p["requests"] >= 10 and p["errors"] == 0 for p in m["by_path"].values())
        assert m["p50_ms"] <= m["p99_ms"] <= m["max_ms"]
        assert m["round_stages"]  # the round ran during the load
    assert report["targets_met"]["errors"] is True
    assert list(tmp_path.iterdir()) == []  # the service directories are removed
