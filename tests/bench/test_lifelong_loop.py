"""The lifelong benchmark's in-process round loop (bench/lifelong_loop.py) on `tiny-llava`:
exact duplicates are not added twice, the pool is what survives pruning, and the training
counts add up, for a feature-based method and for sequential training."""
import dataclasses

import pytest

from bench.lifelong_data import BenchConfig, build_lifelong_bench
from bench.lifelong_loop import LifelongConfig, LifelongRun, _samples_seen, content_key
from workers.engine.features import FeatureConfig
from workers.engine.models import LoraSpec, ModelSpec, load_model
from workers.engine.pruning import PruneConfig
from workers.engine.samples import IMAGE_TOKEN, EngineSample, Message
from workers.engine.selection import SelectionConfig
from workers.engine.training import TrainConfig

pytestmark = pytest.mark.slow

TRAIN = TrainConfig(epochs=1, lr=3e-3, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_lifelong_bench(BenchConfig(seed=5, scenes_per_dataset=4, max_copies=2, eval_per_skill=2),
                                tmp_path_factory.mktemp("bench"))


def loaded():
    return load_model(ModelSpec("tiny-llava", model_type="llava", device="cpu"), lora=LoraSpec(r=4, alpha=8, seed=0))


def test_samples_seen_counts_full_epochs_then_whole_batches():
    assert _samples_seen(10, 3, 4) == 10  # one epoch of 10 samples is 3 batches
    assert _samples_seen(10, 5, 4) == 10 + 2 * 4
    assert _samples_seen(8, 4, 4) == 16


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
        LifelongConfig(method="random", budget=0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        LifelongConfig(method="random", budget=4, warmup_fraction=0)
    with pytest.raises(ValueError):
        LifelongConfig(method="nope", budget=4)


def test_adapt_inf_rounds_dedup_select_train_and_prune(bench):
    cfg = LifelongConfig(
        method="adapt-inf", budget=8, train=TRAIN, warmup_train=TRAIN, warmup_fraction=0.25,
        features=FeatureConfig(proj_dim=64, seed=0, batch_size=8),
        selection=SelectionConfig(n_clusters=2, n_strata=5, threads=1), prune=PruneConfig(eps=0.05),
    )
    run = LifelongRun(loaded(), cfg)
    first = [d.samples for d in bench.rounds[0]]
    rec0 = run.run_round(first)
    assert rec0.new == sum(map(len, first)) and rec0.candidates == rec0.new - rec0.duplicates
    assert sum(rec0.experts.values()) == 8 and rec0.trained > 8  # the warm-up trained too
    assert rec0.pool_after == rec0.candidates - rec0.pruned == len(run.pool)
    assert {"warmup", "features", "select", "train", "prune"} <= set(rec0.seconds)

    # Round 1 brings a new dataset and, again, round 0's first one (renumbered): its samples are
    # exact duplicates of pool members or of samples round 0 pruned, and are not added again.
    again = [dataclasses.replace(s, id=s.id + 10**6) for s in first[0]]
    new = bench.rounds[1][0].samples
    rec1 = run.run_round([new, again])
    assert rec1.new == len(new) + len(again) and rec1.duplicates >= len(again)
    assert rec1.candidates == rec0.pool_after + rec1.new - rec1.duplicates
    assert rec1.trained == 8 and sum(rec1.experts.values()) == 8  # no second warm-up
    assert rec1.pool_after == rec1.candidates - rec1.pruned == len(run.pool)
    assert not {s.id for s in run.pool} & {s.id for s in again}
    assert run.samples_trained == rec0.trained + rec1.trained


def test_sequential_full_trains_on_every_dataset_in_turn(bench):
    run = LifelongRun(loaded(), LifelongConfig(method="sequential-full", budget=1, train=TRAIN))
    datasets = [d.samples for d in bench.rounds[0]]
    rec = run.run_round(datasets)
    assert rec.trained == sum(map(len, datasets)) == rec.candidates  # one epoch each
    assert rec.pool_after == 0 and run.pool == [] and rec.train_loss is not None
