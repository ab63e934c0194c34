import hashlib

import numpy as np
import pytest

from workers.engine.features import SCORE_NAMES, FeatureBatch, read_shard, read_shard_meta, write_shard


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
