"""Two `adaptinf worker` processes on the embedded stack (SQLite + filesystem broker): each one
consumes from the shared broker folder while the other is paused, and a burst shared by both
runs every job exactly once."""
from __future__ import annotations

import re
import signal
from pathlib import Path

import datagen
import pytest
from e2e_procs import wait_for
from sqlalchemy import select

from service.config import Settings
from service.db.models import Dataset, Job
from service.db.session import get_sessionmaker

pytestmark = pytest.mark.slow


def test_two_workers_share_the_filesystem_broker(tmp_path: Path, start_worker) -> None:
    from fastapi.testclient import TestClient

    from service.auth import create_api_key, create_owner
    from service.cli.admin import upgrade_database
    from service.db.session import session_scope
    from service.main import create_app

    settings = Settings(data_dir=tmp_path / "data", reaper_interval_seconds=1)
    settings.data_dir.mkdir(parents=True)
    upgrade_database(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        _, key = create_api_key(session, create_owner(session, "e2e"))
    workers = [start_worker(settings, queues="ingest"), start_worker(settings, queues="ingest,select")]
    for w in workers:
        w.wait_ready()

    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 6, archive="tar.gz")
    factory = get_sessionmaker(settings.resolved_database_url)

    def upload(api, names: list[str]) -> list[str]:  # noqa: ANN001
        ids = []
        for name in names:
            with dataset.open("rb") as f, archive.open("rb") as a:
                r = api.post("/v1/datasets", headers={"Authorization": f"Bearer {key}"},
                             data={"name": name}, files={"file": (dataset.name, f), "images": (archive.name, a)})
            assert r.status_code == 202, r.text
            ids.append(r.json()["job_id"])
        return ids

    def wait_done(ids: list[str]) -> None:
        def done() -> bool:
            with factory() as s:
                return all(s.get(Job, j).status == "succeeded" for j in ids)

        wait_for(done, 90, f"{len(ids)} ingest jobs to succeed", 0.25)

    with TestClient(create_app(settings)) as api:
        # Each worker alone while the other is paused (SIGSTOP while the queues are empty, so
        # it holds no pending job): both consume from the shared folder, whatever the scheduling.
        alone = []
        for k, other in enumerate(reversed(workers)):
            other.proc.send_signal(signal.SIGSTOP)
            try:
                ids = upload(api, [f"alone{k}-{i}" for i in range(2)])
                wait_done(ids)
            finally:
                other.proc.send_signal(signal.SIGCONT)
            alone.append(ids)
        # Then both at once on a burst.
        burst = upload(api, [f"d{i}" for i in range(8)])
        wait_done(burst)

    with factory() as s:
        assert {s.get(Job, j).attempts for j in alone[0] + alone[1] + burst} == {1}
        assert {(d.status, d.num_samples) for d in s.scalars(select(Dataset))} == {("ready", 6)}
    # Every job id was handled by exactly one worker, the paused-out phases by the worker left.
    handled = [re.findall(r"'job_id': '(job_\w+)', 'ran': True", w.output()) for w in workers]
    assert sorted(handled[0] + handled[1]) == sorted(alone[0] + alone[1] + burst)
    assert set(alone[0]) <= set(handled[0]) and set(alone[1]) <= set(handled[1])
