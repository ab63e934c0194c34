"""Sample rows → engine samples: an image blob is checked against its sha256 before any stage
reads it, so a damaged one fails the round naming the sample, the blob and the way out, and
storing the same image again (re-uploading the dataset) lets the next round run."""
from __future__ import annotations

import datagen
import pytest
from index_rows import corrupt_blob
from sqlalchemy import select

from service.db.models import Job, Round, Sample
from tests.workers.rounds.rounds_helpers import POOL_CONFIG, RoundEnv, add_dataset, add_pool, round_env, start_round  # noqa: F401
from workers.rounds.samples import SampleImageDamaged, load_engine_samples

_FAST = {**POOL_CONFIG, "training": {"batch_size": 4, "max_steps": 1}}


def _first_image(env: RoundEnv, dataset_id: str) -> tuple[int, str]:
    with env.factory() as s:
        row = s.scalars(select(Sample).where(Sample.dataset_id == dataset_id).order_by(Sample.position)).first()
        return row.id, row.image_refs[0]


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_image_is_refused_naming_the_sample_and_blob(round_env: RoundEnv, damage: str) -> None:
    env = round_env
    ds = add_dataset(env, "a", [0, 1])
    sample_id, sha = _first_image(env, ds)
    corrupt_blob(env.blobs, sha) if damage == "corrupt" else env.blobs.delete(sha)
    with env.factory() as s, pytest.raises(SampleImageDamaged) as caught:
        load_engine_samples(s, [sample_id], env.blobs)
    assert caught.value.code == f"blob_{damage}"
    assert f"sample {sample_id} of dataset {ds}: its image blob {sha}" in str(caught.value)
    assert "Upload that dataset again" in str(caught.value)


def test_a_round_over_a_corrupt_image_fails_clearly_and_the_next_one_works_once_it_is_stored_again(
    round_env: RoundEnv,
) -> None:
    env = round_env
    ds = add_dataset(env, "a", list(range(6)))
    sample_id, sha = _first_image(env, ds)
    corrupt_blob(env.blobs, sha)
    pool_id = add_pool(env, _FAST)
    round_id, job_id = start_round(env, pool_id, [ds], budget=3, train=False)
    env.drain()
    with env.factory() as s:
        parent = s.get(Job, job_id)
        assert (parent.status, s.get(Round, round_id).status) == ("failed", "failed")
        assert parent.error["code"] == "blob_corrupt"
        assert f"sample {sample_id} of dataset {ds}: its image blob {sha} no longer matches" in parent.error["message"]
    # what a re-upload of the dataset does to the blob: the same content stored again
    assert env.blobs.put_bytes(datagen.image_bytes(0)).sha256 == sha and env.blobs.verify(sha)
    round_id, _ = start_round(env, pool_id, [ds], budget=3, train=False)
    env.drain()
    with env.factory() as s:
        assert s.get(Round, round_id).status == "succeeded"
