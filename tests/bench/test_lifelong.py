"""`python bench/lifelong.py --quick` end to end (through embedded services): the JSON line's shape,
its statistics consistent with its per-seed values, and the PNG."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lifelong import METHODS, METRICS
from bench.lifelong_stats import mean_ci, paired_ci

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    png = tmp_path_factory.mktemp("lifelong") / "plot.png"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "lifelong.py"), "--quick", "--plot", str(png)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), png


def test_json_line_has_the_issue_shape(quick_run):
    summary, _ = quick_run
    assert summary["seeds"] == [0, 1] and summary["quick"] is True
    assert list(summary["methods"]) == list(METHODS)
    for stats in summary["methods"].values():
        for metric in ("avg_acc", "forgetting", "rare_acc", "relative_gain"):
            assert set(stats[metric]) == {"mean", "ci95", "n"} and len(stats[metric]["ci95"]) == 2
    assert {"adapt-inf-vs-random", "adapt-inf-vs-semdedup"} <= set(summary["paired"])
    assert summary["primary"] == {"pair": "adapt-inf-vs-random", "metric": "avg_acc"}
    assert summary["arrival_round"]["digit"] == 4 and summary["rare_skill"] == "size"


def test_statistics_follow_from_the_per_seed_values(quick_run):
    summary, _ = quick_run
    per = summary["per_seed"]
    for method in METHODS:
        assert len(per[method]) == 2
        for metric in METRICS:
            assert summary["methods"][method][metric] == mean_ci([r[metric] for r in per[method]])
    for other in ("random", "semdedup"):
        for metric in METRICS:
            want = paired_ci([r[metric] for r in per["adapt-inf"]], [r[metric] for r in per[other]])
            assert summary["paired"][f"adapt-inf-vs-{other}"][metric] == want
    # relative gain is measured against multitask: 100 for multitask itself wherever defined
    assert all(r["relative_gain"] in (None, 100.0) for r in per["multitask"])
    # random, sequential and multitask never prune (sequential's new samples join its pool, it
    # just trains on them alone); the pruning methods do
    pools = {m: summary["pool_final"][m]["mean"] for m in METHODS}
    assert pools["sequential"] == pools["random"] == pools["multitask"] > pools["adapt-inf"]
    # the service trains each pool's warm-up: the same adapter for every method of a seed
    assert summary["warmup_shared"] is True


def test_plot_is_a_png(quick_run):
    summary, png = quick_run
    assert summary["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
