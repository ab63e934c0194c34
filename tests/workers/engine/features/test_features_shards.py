import hashlib

import numpy as np
import pytest

from tests.workers.engine.features.helpers import conversation, mixed_samples
from workers.engine.features import (
    SCORE_NAMES, FeatureBatch, FeatureConfig, compute_features, read_shard, read_shard_meta, stream_features, write_shard,
)

CFG = FeatureConfig(proj_dim=32, batch_size=2)


def _batch(n: int) -> FeatureBatch:
    rng = np.random.default_rng(0)
    scores = {k: rng.random(n, dtype=np.float32) for k in SCORE_NAMES}
    scores["ig"][0] = np.nan
    return FeatureBatch(np.arange(n, dtype=np.int64) + 7, rng.standard_normal((n, 8)).astype(np.float16), scores)


def test_write_read_round_trip_with_checksum(tmp_path):
    batch = _batch(4)
    digest = write_shard(tmp_path / "s.npz", batch, meta={"config": {"a": 1}})
    assert digest == hashlib.sha256((tmp_path / "s.npz").read_bytes()).hexdigest()
    back = read_shard(tmp_path / "s.npz")
    assert np.array_equal(back.ids, batch.ids) and back.features.dtype == np.float16
    assert np.array_equal(back.features, batch.features)
    for k in SCORE_NAMES:
        np.testing.assert_array_equal(back.scores[k], batch.scores[k])
    assert read_shard_meta(tmp_path / "s.npz")["config"] == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temp file left behind


def test_malformed_shard_is_rejected(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="malformed feature shard"):
        read_shard(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        read_shard(tmp_path / "missing.npz")


def _samples(image_dir):
    return mixed_samples(image_dir) + [conversation(20 + i, f"q{i}?", f"a{i}") for i in range(2)]


def test_stream_writes_shards_that_read_back_as_the_direct_result(tiny_llava_nonzero, image_dir, tmp_path):
    samples = _samples(image_dir)
    infos = []
    paths = stream_features(tiny_llava_nonzero, iter(samples), CFG, tmp_path, shard_size=3, on_shard=infos.append)
    assert [p.name for p in paths] == ["shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert [i.n for i in infos] == [3, 3, 1] and not any(i.skipped for i in infos)
    merged = FeatureBatch.concat([read_shard(p) for p in paths])
    direct = compute_features(tiny_llava_nonzero, samples, CFG)
    assert merged.ids.tolist() == [s.id for s in samples]
    np.testing.assert_allclose(merged.features.astype(np.float32), direct.features.astype(np.float32), rtol=2e-3, atol=1e-3)


def test_stream_resumes_shard_by_shard(tiny_llava_nonzero, image_dir, tmp_path):
    samples = _samples(image_dir)

    def crash_after_first(info):
        raise KeyboardInterrupt  # the worker dies right after shard 0 is on disk

    with pytest.raises(KeyboardInterrupt):
        stream_features(tiny_llava_nonzero, samples, CFG, tmp_path, shard_size=3, on_shard=crash_after_first)
    first = (tmp_path / "shard-00000.npz").read_bytes()
    (tmp_path / ".shard-00001.npz.k3j9x2.tmp").write_bytes(b"half")  # a crash mid-write (atomic_write's temp name)
    infos = []
    stream_features(tiny_llava_nonzero, samples, CFG, tmp_path, shard_size=3, on_shard=infos.append)
    assert [i.skipped for i in infos] == [True, False, False]
    assert (tmp_path / "shard-00000.npz").read_bytes() == first
    assert infos[0].sha256 == hashlib.sha256(first).hexdigest()
    assert not list(tmp_path.glob(".*tmp*"))
    # another config, or other samples under a shard's name, is recomputed rather than reused
    again = []
    stream_features(tiny_llava_nonzero, samples, FeatureConfig(proj_dim=16), tmp_path, shard_size=3, on_shard=again.append)
    assert not any(i.skipped for i in again) and read_shard(tmp_path / "shard-00000.npz").features.shape[1] == 16
    moved = []
    stream_features(tiny_llava_nonzero, samples[1:], FeatureConfig(proj_dim=16), tmp_path, shard_size=3, on_shard=moved.append)
    assert not any(i.skipped for i in moved)
    with pytest.raises(ValueError, match="shard_size"):
        stream_features(tiny_llava_nonzero, samples, CFG, tmp_path, shard_size=0)
