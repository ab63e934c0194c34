"""Fixtures of the round end-to-end tests: a Redis DB number of their own, datasets, HTTP helpers."""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datagen
import pytest
from e2e_procs import wait_for
from redistools import flushed_redis

ROUNDS_REDIS_URL = "redis://127.0.0.1:6379/11"  # not DB 7: other e2e sessions may run beside this one

# Tiny and quick, yet several shards, clusters and training steps.
POOL_CONFIG = {
    "features": {"proj_dim": 64, "batch_size": 8},
    "selection": {"n_clusters": 3, "n_strata": 5},
    "training": {"batch_size": 4, "max_steps": 2},
    "shard_size": 5,
    "warmup_fraction": 0.2,
}


@pytest.fixture
def rounds_redis_url() -> Iterator[str]:
    yield from flushed_redis(ROUNDS_REDIS_URL)


def write_dataset(directory: Path, indices: list[int], short_answers: bool = False,
                  record_skill: str | None = None) -> tuple[Path, Path]:
    """datagen's samples `indices` (with their images; every third text-only) as dataset.json + images.tar.gz.
    The same index in two datasets is the same content: an exact duplicate. `record_skill` goes
    into every record's own `skill`."""
    records, images = datagen.build_records(max(indices) + 1, text_only=True)
    chosen = [records[i] | ({"skill": record_skill} if record_skill else {}) for i in indices]
    if short_answers:  # exact match only scores short answers: an eval set needs them for accuracy
        for r in chosen:
            r["conversations"][-1]["value"] = ("red", "blue", "outdoors", "a roof")[int(r["id"][1:]) % 4]
    names = {n for r in chosen for n in ([r["image"]] if isinstance(r.get("image"), str) else r.get("image", []))}
    directory.mkdir(parents=True, exist_ok=True)
    return (datagen.write_records(directory / "dataset.json", chosen),
            datagen.write_archive(directory, {n: images[n] for n in names}, "tar.gz"))


def upload_ready(http, directory: Path, indices: list[int], timeout: float = 90,  # noqa: ANN001
                 short_answers: bool = False, skill: str | None = None, record_skill: str | None = None) -> str:
    """Upload a dataset over HTTP (declaring `skill` for it, `record_skill` in each record) and
    wait until it is ready; returns its id."""
    dataset, archive = write_dataset(directory, indices, short_answers, record_skill)
    with dataset.open("rb") as f, archive.open("rb") as a:
        r = http.post("/v1/datasets", files={"file": (dataset.name, f), "images": (archive.name, a)},
                      data={"skill": skill} if skill else {})
    assert r.status_code == 202, r.text
    url = f"/v1/datasets/{r.json()['id']}"

    def ready() -> bool:
        body = http.get(url).json()
        assert body["status"] != "failed", body
        return body["status"] == "ready"

    wait_for(ready, timeout, f"{url} ready", 0.25)
    return r.json()["id"]


def create_pool(http, eval_sets: list[dict[str, str]] | None = None, **config: Any) -> dict[str, Any]:  # noqa: ANN001
    r = http.post("/v1/pools", json={"name": "e2e", "base_model": "tiny-llava", "model_type": "llava",
                                     "config": {**POOL_CONFIG, **config}, "eval_sets": eval_sets or []})
    assert r.status_code == 201, r.text
    return r.json()


def start_round(http, pool_id: str, dataset_ids: list[str], **params: Any) -> dict[str, Any]:  # noqa: ANN001
    r = http.post(f"/v1/pools/{pool_id}/rounds", json={"dataset_ids": dataset_ids, "budget": 8, **params})
    assert r.status_code == 202, r.text
    return r.json()


def wait_round(http, round_id: str, timeout: float, status: str = "succeeded") -> dict[str, Any]:  # noqa: ANN001
    def ended() -> dict[str, Any] | None:
        body = http.get(f"/v1/rounds/{round_id}").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            assert body["status"] == status, body
            return body
        return None

    return wait_for(ended, timeout, f"round {round_id} {status}", 0.5)


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]
