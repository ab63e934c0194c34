"""The second embedding: mean-pooled last hidden states from the feature pass itself."""
import numpy as np
import pytest
import torch

from tests.workers.engine.features.helpers import conversation, mixed_samples
from workers.engine.features import FeatureBatch, FeatureConfig, compute_features, read_shard, write_shard
from workers.engine.models import collate, encode_sample


def reference_hidden(loaded, sample) -> np.ndarray:
    """One sample alone through HF's model: the mean of its last hidden states over its tokens."""
    batch = collate([encode_sample(loaded, sample)], loaded.tokenizer.pad_token_id)
    with torch.no_grad():
        out = loaded.hf_model(**batch.model_inputs(), output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1][0].float().mean(dim=0).numpy()


@pytest.mark.parametrize("fixture", ["tiny_llava_nonzero", "tiny_causal_lm_nonzero"])
def test_hidden_is_the_mean_pooled_last_hidden_state_whatever_the_batch(request, image_dir, fixture):
    loaded = request.getfixturevalue(fixture)
    samples = mixed_samples(image_dir) if fixture == "tiny_llava_nonzero" else [
        conversation(i, "q" * (3 * i + 1), "a" * (5 * i + 2)) for i in range(5)]
    cfg = FeatureConfig(proj_dim=32, batch_size=3, hidden_embedding=True)
    out = compute_features(loaded, samples, cfg)
    assert out.hidden.dtype == np.float16 and out.hidden.shape == (len(samples), loaded.hf_model.config.get_text_config().hidden_size)
    for row, sample in zip(out.hidden.astype(np.float32), samples):
        want = reference_hidden(loaded, sample)
        np.testing.assert_allclose(row, want, rtol=5e-3, atol=5e-3 * float(np.abs(want).max()))
    # padding and batch mates change nothing; the gradient features are the same as without it
    alone = compute_features(loaded, samples, FeatureConfig(proj_dim=32, batch_size=1, hidden_embedding=True))
    np.testing.assert_allclose(alone.hidden.astype(np.float32), out.hidden.astype(np.float32), rtol=5e-3, atol=5e-3)
    plain = compute_features(loaded, samples, FeatureConfig(proj_dim=32, batch_size=3))
    assert plain.hidden is None and np.array_equal(plain.features, out.features)


def test_hidden_survives_the_shard_and_changes_the_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    scores = {k: rng.random(3, dtype=np.float32) for k in ("ppl", "el2n", "entropy", "grand", "ig")}
    batch = FeatureBatch(np.arange(3, dtype=np.int64), rng.standard_normal((3, 4)).astype(np.float16), scores,
                         hidden=rng.standard_normal((3, 6)).astype(np.float16))
    write_shard(tmp_path / "s.npz", batch)
    assert np.array_equal(read_shard(tmp_path / "s.npz").hidden, batch.hidden)
    assert FeatureConfig().fingerprint() != FeatureConfig(hidden_embedding=True).fingerprint()
    assert "hidden_embedding" not in FeatureConfig().fingerprint()  # older shards keep matching
    with pytest.raises(ValueError, match="hidden"):
        FeatureBatch.concat([batch, FeatureBatch(batch.ids, batch.features, batch.scores)])
