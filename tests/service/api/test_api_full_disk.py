"""A full disk, for real: the data dir (SQLite, blobs, work files) on a 16 MiB tmpfs, filled to the
last byte. GETs keep working, uploads and round creation are 507s that leave nothing behind,
/readyz is 503 naming the disk, and once the space is freed the same requests succeed."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from apitools import blob_files, make_caller, upload_leftovers
from datagen import llava_record, write_records
from disktools import fill, small_tmpfs
from fastapi.testclient import TestClient

from service.config import Settings
from service.db.models import ApiKey
from service.db.session import get_engine, session_scope
from service.disk import free_bytes
from service.main import create_app
from tests.service.pool_rows import make_dataset


@dataclass
class Disk:
    client: TestClient
    settings: Settings
    root: Path


@pytest.fixture
def disk(tmp_path: Path, sqlite_template: Path) -> Iterator[Disk]:
    with small_tmpfs(tmp_path / "disk", "16m") as root:
        data = root / "data"
        data.mkdir()
        shutil.copyfile(sqlite_template, data / "adaptinf.db")
        settings = Settings(data_dir=data, broker_url="memory://", max_upload_bytes=1024 * 1024, min_free_disk_mb=1)
        try:
            with TestClient(create_app(settings)) as client:
                yield Disk(client, settings, root)
        finally:
            get_engine(settings.resolved_database_url).dispose()  # close SQLite's files before the unmount


def _upload(disk: Disk, headers: dict[str, str], path: Path):  # noqa: ANN202
    return disk.client.post("/v1/datasets", files={"file": (path.name, path.read_bytes())}, headers=headers)


def _temp_files(disk: Disk) -> list[Path]:
    """Files a failed write may leave: upload dirs, blob-store temp files, SQLite's journals aside."""
    return upload_leftovers(disk.settings) + [p for p in blob_files(disk.settings) if p.parent.name == "tmp"]


def test_full_disk_keeps_gets_refuses_writes_with_507_and_recovers(
    disk: Disk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = disk.settings.resolved_database_url
    alice = make_caller(url, "alice")
    headers = alice.headers
    dataset = write_records(tmp_path / "d.json", [llava_record(f"s{i}", f"question {i}?", f"answer {i}")
                                                  for i in range(50)])
    assert _upload(disk, headers, dataset).status_code == 202
    pool = disk.client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                            headers=headers)
    assert pool.status_code == 201, pool.text
    pool_id = pool.json()["id"]
    ready = make_dataset(url, alice.owner_id, 4)[0]
    with session_scope(url) as session:  # the key's last use is old: the next request tries to record it
        session.query(ApiKey).update({ApiKey.last_used_at: None})

    filler = fill(disk.root)
    assert free_bytes(disk.root) == 0

    # reads keep working, although authentication cannot record the key's use
    for path in ("/v1/datasets", "/v1/pools", f"/v1/pools/{pool_id}"):
        r = disk.client.get(path, headers=headers)
        assert r.status_code == 200, (path, r.text)
    with session_scope(url) as session:
        assert session.query(ApiKey).one().last_used_at is None  # the write failed, the request did not
    tries = [r for r in caplog.records if r.getMessage().startswith("could not record the use of API key")]
    assert len(tries) == 1  # tried once, not on each of the three requests

    r = disk.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["disk"] == "low"
    assert r.json()["disk"]["free_bytes"] == 0 and "ADAPTINF_MIN_FREE_DISK_MB" in r.json()["detail"]

    r = _upload(disk, headers, dataset)
    assert r.status_code == 507 and r.headers["content-type"] == "application/problem+json", r.text
    assert r.json()["code"] == "insufficient_storage"
    assert "the uploaded file" in r.json()["detail"] and "ADAPTINF_DATA_DIR" in r.json()["detail"]
    assert str(disk.root) not in r.text  # no server path
    assert _temp_files(disk) == []

    r = disk.client.post(f"/v1/pools/{pool_id}/rounds", json={"dataset_ids": [ready], "budget": 2}, headers=headers)
    assert r.status_code == 507 and r.json()["code"] == "insufficient_storage", r.text
    assert "the round's records" in r.json()["detail"]
    assert disk.client.get(f"/v1/pools/{pool_id}/rounds", headers=headers).json()["data"] == []

    filler.unlink()
    assert disk.client.get("/readyz").status_code == 200
    assert _upload(disk, headers, dataset).status_code == 202
    r = disk.client.post(f"/v1/pools/{pool_id}/rounds", json={"dataset_ids": [ready], "budget": 2}, headers=headers)
    assert r.status_code == 202, r.text
    assert _temp_files(disk) == []
