"""A sample's features and scores do not depend on its batch, padding side or seed reuse."""
import numpy as np
import pytest

from tests.workers.engine.features.helpers import conversation, mixed_samples
from workers.engine.features import SCORE_NAMES, FeatureConfig, compute_features


def _assert_same(a, b):
    assert np.array_equal(a.ids, b.ids)
    scale = float(np.abs(a.features.astype(np.float32)).max())
    # float16 features: one ulp near the largest entry is ~5e-4 relative
    np.testing.assert_allclose(a.features.astype(np.float32), b.features.astype(np.float32), rtol=2e-3, atol=2e-3 * scale)
    for k in SCORE_NAMES:
        np.testing.assert_allclose(a.scores[k], b.scores[k], rtol=1e-4, equal_nan=True, err_msg=k)


@pytest.mark.parametrize("fixture", ["tiny_llava_nonzero", "tiny_causal_lm_nonzero"])
def test_results_do_not_depend_on_batch_composition_or_padding(request, image_dir, fixture):
    loaded = request.getfixturevalue(fixture)
    samples = mixed_samples(image_dir)
    filler = [conversation(100 + i, "x" * (7 * i + 1), "y" * (3 * i + 1)) for i in range(4)]
    alone = compute_features(loaded, samples, FeatureConfig(proj_dim=64, batch_size=1))
    for side in ("right", "left"):
        cfg = FeatureConfig(proj_dim=64, batch_size=4, padding_side=side, sort_by_length=False)
        crowd = compute_features(loaded, filler[:2] + samples + filler[2:], cfg)
        picked = np.isin(crowd.ids, alone.ids)
        sub = type(crowd)(crowd.ids[picked], crowd.features[picked], {k: v[picked] for k, v in crowd.scores.items()})
        _assert_same(alone, sub)
    _assert_same(alone, compute_features(loaded, samples, FeatureConfig(proj_dim=64, batch_size=5, padding_side="left")))


def test_same_seed_same_features_and_another_seed_differs(tiny_llava_nonzero, image_dir):
    samples = mixed_samples(image_dir)[:3]
    a = compute_features(tiny_llava_nonzero, samples, FeatureConfig(proj_dim=64, seed=5))
    b = compute_features(tiny_llava_nonzero, samples, FeatureConfig(proj_dim=64, seed=5))
    c = compute_features(tiny_llava_nonzero, samples, FeatureConfig(proj_dim=64, seed=6))
    assert np.array_equal(a.features, b.features)
    assert not np.array_equal(a.features, c.features)
    np.testing.assert_array_equal(a.scores["ppl"], c.scores["ppl"])  # the seed only moves the projection


def test_multi_image_and_text_only_samples_go_through(tiny_llava_nonzero, image_dir):
    samples = mixed_samples(image_dir)
    out = compute_features(tiny_llava_nonzero, samples, FeatureConfig(proj_dim=64, batch_size=2))
    assert out.features.dtype == np.float16 and out.features.shape == (5, 64)
    assert out.ids.tolist() == [s.id for s in samples]
    assert np.isfinite(out.features.astype(np.float32)).all()
    assert (np.abs(out.features.astype(np.float32)).sum(axis=1) > 0).all()
    for k in SCORE_NAMES:
        assert out.scores[k].dtype == np.float32
    assert np.isnan(out.scores["ig"]).tolist() == [False, True, False, False, True]


def test_feature_config_validation_names_the_field():
    for kwargs, field in [
        (dict(layers="first"), "FeatureConfig.layers"),
        (dict(layers=()), "FeatureConfig.layers"),
        (dict(proj_dim=0), "FeatureConfig.proj_dim"),
        (dict(batch_size=0), "FeatureConfig.batch_size"),
        (dict(max_length=1), "FeatureConfig.max_length"),
        (dict(padding_side="middle"), "FeatureConfig.padding_side"),
    ]:
        with pytest.raises(ValueError, match=field):
            FeatureConfig(**kwargs)
    assert FeatureConfig(layers=[-1, 0]).resolve_layers(3) == [0, 2]


def test_a_batch_padded_past_max_length_runs_as_micro_batches_with_the_same_results(tiny_causal_lm_nonzero, monkeypatch):
    from workers.engine.features import compute
    from workers.engine.models.batching import token_groups

    samples = [conversation(i, "q" * (i + 1), "a" * n) for i, n in enumerate([3, 90, 5, 40, 2])]
    groups = []

    def spy(lengths, budget):
        groups.append(token_groups(lengths, budget))
        return groups[-1]

    alone = compute_features(tiny_causal_lm_nonzero, samples,
                             FeatureConfig(proj_dim=64, batch_size=1, max_length=64, hidden_embedding=True))
    monkeypatch.setattr(compute, "token_groups", spy)
    cfg = FeatureConfig(proj_dim=64, batch_size=5, max_length=64, sort_by_length=False, hidden_embedding=True)
    grouped = compute_features(tiny_causal_lm_nonzero, samples, cfg)
    assert len(groups) == 1 and len(groups[0]) > 1  # 5 × 64 padded tokens do not fit 64
    _assert_same(alone, grouped)
    np.testing.assert_allclose(alone.hidden.astype(np.float32), grouped.hidden.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_the_text_only_pass_of_a_padded_image_batch_runs_as_micro_batches(tiny_llava_nonzero, image_dir, monkeypatch):
    from workers.engine.features import compute
    from workers.engine.models import encode_sample
    from workers.engine.models.batching import token_groups

    samples = mixed_samples(image_dir)
    longest = max(len(encode_sample(tiny_llava_nonzero, s).input_ids) for s in samples)
    cfg = dict(proj_dim=64, max_length=longest, sort_by_length=False)
    alone = compute_features(tiny_llava_nonzero, samples, FeatureConfig(batch_size=1, **cfg))
    text_groups = []
    text_only_nll = compute.FeatureEngine.text_only_nll

    def spy(self, encoded):
        text_groups.append(token_groups([len(e.input_ids) for e in encoded], self.cfg.max_length))
        return text_only_nll(self, encoded)

    monkeypatch.setattr(compute.FeatureEngine, "text_only_nll", spy)
    grouped = compute_features(tiny_llava_nonzero, samples, FeatureConfig(batch_size=len(samples), **cfg))
    assert len(text_groups) == 1 and len(text_groups[0]) > 1  # the image samples' text-only batch was split
    _assert_same(alone, grouped)  # IG (from the text-only pass) included
