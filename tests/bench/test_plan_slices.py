"""bench/plan_slices.py on a small plan: both formats give the same ids (the script checks it
before timing) and the JSON line has its keys."""
from bench.plan_slices import main, synthetic_plan


def test_synthetic_plan_is_a_consistent_candidate_set():
    plan = synthetic_plan(1000)
    assert plan.candidates == sorted(plan.members + plan.new) and len(plan.candidates) == 1000
    assert not set(plan.members) & set(plan.new)


def test_json_line_has_before_and_after(capsys):
    out = main(["--candidates", "5000", "--shard-size", "64", "--jobs", "5"])
    assert out["candidates"] == 5000 and out["shards"] == 79 and out["jobs_timed"] == 5
    assert out["per_job_s_before"] > 0 and out["per_job_s_after"] > 0
    # a job reads the prefix, header, one digest and 64 ids: far less than the plan
    assert out["bytes_read_per_job_after"] < out["plan_bytes_after"] // 10
    assert capsys.readouterr().out.strip().startswith('{"candidates": 5000')
