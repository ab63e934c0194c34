"""The lifelong benchmark's in-process round loop (bench/lifelong_loop.py) on `tiny-llava`:
exact duplicates are not added twice, the pool is what survives pruning, every method takes
exactly the configured steps, sequential trains on the round's data only, multitask on all."""
import dataclasses

import pytest

from bench.lifelong_data import BenchConfig, build_lifelong_bench
from bench.lifelong_loop import LifelongConfig, LifelongRun, content_key, fixed_steps
from core.samples import IMAGE_TOKEN, EngineSample, Message
from workers.engine.features import FeatureConfig
from workers.engine.models import LoraSpec, ModelSpec, load_model
from workers.engine.pruning import PruneConfig
from workers.engine.selection import SelectionConfig
from workers.engine.training import TrainConfig

pytestmark = pytest.mark.slow

TRAIN = TrainConfig(lr=3e-3, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_lifelong_bench(BenchConfig(seed=5, scenes_per_dataset=4, max_copies=2, eval_per_skill=2),
                                tmp_path_factory.mktemp("bench"))


def loaded():
    return load_model(ModelSpec("tiny-llava", model_type="llava", device="cpu"), lora=LoraSpec(r=4, alpha=8, seed=0))


def test_fixed_steps_covers_the_steps_whatever_the_data_size():
    for n, steps in ((3, 10), (100, 3), (8, 2)):
        cfg = fixed_steps(TRAIN, n, steps, seed=7)
        assert cfg.max_steps == steps and cfg.seed == 7
        assert cfg.epochs * -(-n // TRAIN.batch_size) >= steps  # enough epochs that max_steps binds


def test_content_key_sees_text_and_image_bytes(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    msgs = (Message("user", f"{IMAGE_TOKEN}\nq"), Message("assistant", "x"))
    assert content_key(EngineSample(1, msgs, (a,))) == content_key(EngineSample(2, msgs, (a,)))
    assert content_key(EngineSample(1, msgs, (a,))) != content_key(EngineSample(1, msgs, (b,)))
    other = (Message("user", f"{IMAGE_TOKEN}\nq"), Message("assistant", "y"))
    assert content_key(EngineSample(1, msgs, (a,))) != content_key(EngineSample(1, other, (a,)))


def test_config_names_what_is_wrong():
    with pytest.raises(ValueError, match="budget"):
        LifelongConfig(method="random", budget=0, steps=2)
    with pytest.raises(ValueError, match="steps"):
        LifelongConfig(method="random", budget=4, steps=0)
    with pytest.raises(ValueError, match="prune"):
        LifelongConfig(method="sequential", budget=4, steps=2, prune=PruneConfig())
    with pytest.raises(ValueError):
        LifelongConfig(method="nope", budget=4, steps=2)


def test_adapt_inf_rounds_dedup_select_train_and_prune(bench):
    cfg = LifelongConfig(
        method="adapt-inf", budget=8, steps=3, train=TRAIN,
        features=FeatureConfig(proj_dim=64, seed=0, batch_size=8),
        selection=SelectionConfig(n_clusters=2, n_strata=5, threads=1), prune=PruneConfig(eps=0.05),
    )
    run = LifelongRun(loaded(), cfg)
    first = [d.samples for d in bench.rounds[0]]
    rec0 = run.run_round(first)
    assert rec0.new == sum(map(len, first)) and rec0.candidates == rec0.new - rec0.duplicates
    assert sum(rec0.experts.values()) == 8 == rec0.trained_on
    assert rec0.pool_after == rec0.candidates - rec0.pruned == len(run.pool)
    assert {"features", "select", "train", "prune"} <= set(rec0.seconds)

    # Round 1 brings a new dataset and, again, round 0's first one (renumbered): its samples are
    # exact duplicates of pool members or of samples round 0 pruned, and are not added again.
    again = [dataclasses.replace(s, id=s.id + 10**6) for s in first[0]]
    new = bench.rounds[1][0].samples
    rec1 = run.run_round([new, again])
    assert rec1.new == len(new) + len(again) and rec1.duplicates >= len(again)
    assert rec1.candidates == rec0.pool_after + rec1.new - rec1.duplicates
    assert rec1.trained_on == 8 and sum(rec1.experts.values()) == 8
    assert rec1.pool_after == rec1.candidates - rec1.pruned == len(run.pool)
    assert not {s.id for s in run.pool} & {s.id for s in again}


def test_sequential_trains_on_the_rounds_data_only_and_multitask_on_everything(bench):
    seq = LifelongRun(loaded(), LifelongConfig(method="sequential", budget=1, steps=2, train=TRAIN))
    multi = LifelongRun(loaded(), LifelongConfig(method="multitask", budget=1, steps=2, train=TRAIN))
    seen = 0
    for t in range(2):
        datasets = [d.samples for d in bench.rounds[t]]
        rs, rm = seq.run_round(datasets), multi.run_round(datasets)
        seen += rm.new - rm.duplicates
        assert rs.trained_on == sum(map(len, datasets)) and rs.pool_after == 0 and seq.pool == []
        assert rm.trained_on == seen == len(multi.pool)  # all distinct samples so far
    assert seen > rs.trained_on


@pytest.mark.parametrize("method", ["random", "sequential", "multitask"])
def test_every_method_takes_exactly_the_configured_steps(bench, method):
    # 5 steps of 4 samples: several epochs over round 0's ~10 samples, and a budget of 2 is one step
    for budget, steps in ((100, 5), (2, 3)):
        run = LifelongRun(loaded(), LifelongConfig(method=method, budget=budget, steps=steps, train=TRAIN))
        assert run.run_round([d.samples for d in bench.rounds[0]]).steps == steps
