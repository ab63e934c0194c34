"""The lifelong benchmark's rounds (bench/lifelong_loop.py) through an embedded `adaptinf serve` on
`tiny-llava`: exact duplicates are not added twice, the pool is what survives pruning, every
method takes exactly the configured steps, sequential trains on the round's data only, multitask
on all, and every method starts from the same warm-up adapter."""
import pytest

from bench.lifelong_data import BenchConfig, build_lifelong_bench
from bench.lifelong_loop import METHODS, LifelongConfig, ServiceRun, upload_bench, upload_items, wait_ingested
from bench.service_procs import EmbeddedService

POOL = {"lora": {"r": 4, "alpha": 8}, "features": {"proj_dim": 64, "batch_size": 8},
        "selection": {"n_clusters": 2, "n_strata": 5}, "training": {"lr": 3e-3, "batch_size": 4},
        "warmup_fraction": 0.2}


def test_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="budget"):
        LifelongConfig(method="random", budget=0, steps=2)
    with pytest.raises(ValueError, match="steps"):
        LifelongConfig(method="random", budget=4, steps=0)
    with pytest.raises(ValueError, match="method must be one of"):
        LifelongConfig(method="nope", budget=4, steps=2)


def test_every_method_trains_exactly_its_steps_and_full_methods_take_every_candidate():
    for method, body in METHODS.items():
        cfg = LifelongConfig(method, budget=8, steps=5, pool=POOL, seed=3)
        training = cfg.pool_config()["training"]
        # an epoch is at least one step, so `steps` epochs always reach max_steps
        assert training == {**POOL["training"], "epochs": 5, "max_steps": 5}
        sent = cfg.round_body(["ds_a"])
        assert sent["dataset_ids"] == ["ds_a"] and sent["seed"] == 3 and sent["prune"] == body["prune"]
        assert sent["budget"] == (1.0 if body["method"] == "full" else 8)
    assert "epochs" not in POOL["training"]  # the caller's dict is left alone
    assert LifelongConfig("sequential", 1, 1).round_body(["d"])["candidates"] == "new"


@pytest.mark.slow
def test_rounds_through_the_service(tmp_path):
    bench = build_lifelong_bench(BenchConfig(seed=5, scenes_per_dataset=4, max_copies=2, eval_per_skill=2),
                                 tmp_path / "data")
    env = {"ADAPTINF_DEVICE": "cpu", "ADAPTINF_TORCH_THREADS": "1"}
    with EmbeddedService(tmp_path / "service", env=env) as svc:
        api = svc.api
        rounds, eval_sets = upload_bench(api, bench, tmp_path / "data", tmp_path / "uploads")
        runs = {m: ServiceRun(api, m, LifelongConfig(m, budget=8, steps=3, pool=POOL), eval_sets)
                for m in ("adapt-inf", "sequential", "multitask")}
        first = [len(d.items) for d in bench.rounds[0]]
        for run in runs.values():
            run.start_round(rounds[0])
        rec0 = {m: run.finish_round() for m, run in runs.items()}
        a0 = rec0["adapt-inf"]
        assert a0.new == sum(first) and a0.candidates == a0.new - a0.duplicates
        assert sum(a0.experts.values()) == 8 == a0.trained_on
        assert a0.pool_after == a0.candidates - a0.pruned == runs["adapt-inf"].pool_size()
        assert {"warmup", "features", "select", "train"} <= set(a0.seconds)

        # Round 1 brings a new dataset and, again, round 0's first one (uploaded anew): a sample
        # whose content is an active pool member is an exact duplicate and not added again (one
        # whose original round 0 pruned comes back as new: pruning is of samples, not contents).
        again, job = upload_items(api, "again", bench.rounds[0][0].skill, bench.rounds[0][0].items,
                                  tmp_path / "data", tmp_path / "uploads")
        wait_ingested(api, [job])
        second = rounds[1] + [again]
        for run in runs.values():
            run.start_round(second)
        rec1 = {m: run.finish_round() for m, run in runs.items()}
        a1 = rec1["adapt-inf"]
        n_again, n_new = first[0], sum(len(d.items) for d in bench.rounds[1])
        assert a1.new == n_new + n_again and a1.duplicates >= n_again - a0.pruned
        assert a1.candidates == a0.pool_after + a1.new - a1.duplicates
        assert a1.trained_on == 8 and sum(a1.experts.values()) == 8
        assert a1.pool_after == a1.candidates - a1.pruned == runs["adapt-inf"].pool_size()
        assert "warmup" not in a1.seconds  # the adapter continues

        seq, multi = rec1["sequential"], rec1["multitask"]
        # nothing pruned: every copy is a duplicate (and the text-only copies inside a dataset too)
        assert multi.duplicates == seq.duplicates >= max(n_again, a1.duplicates)
        assert seq.trained_on == seq.new - seq.duplicates  # this round's distinct new samples only
        assert multi.trained_on == multi.pool_after == rec0["multitask"].pool_after + multi.new - multi.duplicates
        assert all(r.steps == 3 for recs in (rec0, rec1) for r in recs.values())
        assert len({run.warmup_sha256() for run in runs.values()}) == 1  # one warm-up for every method

        skills = bench.config.skills
        acc, base = runs["adapt-inf"].accuracy(skills)
        assert len(acc) == 2 and all(len(row) == len(skills) for row in acc) and len(base) == len(skills)
        assert all(0.0 <= v <= 1.0 for row in acc for v in row)
