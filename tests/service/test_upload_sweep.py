"""Stale upload folders go at start-up and then every upload_sweep_seconds; a folder whose file
is still being written stays, however old the folder itself is."""
from __future__ import annotations

import os
import time

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.upload_sweep import remove_stale_uploads


def make_upload(settings, name: str, age: float, file_age: float | None = None):
    folder = settings.work_dir / "uploads" / name
    folder.mkdir(parents=True)
    part = folder / "file"
    part.write_bytes(b"x")
    then = time.time() - age
    os.utime(part, (then, then) if file_age is None else (time.time() - file_age,) * 2)
    os.utime(folder, (then, then))
    return folder


def test_only_folders_with_no_recent_write_are_removed(settings):
    settings = settings.model_copy(update={"stale_upload_seconds": 600})
    crashed = make_upload(settings, "crashed", age=700)
    live = make_upload(settings, "live", age=7200, file_age=5)  # a long upload still receiving its file
    young = make_upload(settings, "young", age=10)
    assert remove_stale_uploads(settings) == ["crashed"]
    assert not crashed.exists() and live.exists() and young.exists()


def test_the_app_sweeps_at_start_and_periodically(settings):
    settings = settings.model_copy(update={"stale_upload_seconds": 60, "upload_sweep_seconds": 0.2})
    at_start = make_upload(settings, "at-start", age=120)
    with TestClient(create_app(settings)) as client:
        assert not at_start.exists()
        later = make_upload(settings, "later", age=120)  # a crash while the API runs (another process)
        fresh = make_upload(settings, "fresh", age=1)
        deadline = time.monotonic() + 10
        while later.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not later.exists() and fresh.exists()
        assert client.get("/healthz").status_code == 200


def test_the_age_of_a_stale_upload_has_a_floor() -> None:
    """Set too low, the sweep would take an upload still being validated for a crashed one."""
    from pydantic import ValidationError

    from service.config import Settings

    with pytest.raises(ValidationError, match="stale_upload_seconds"):
        Settings(stale_upload_seconds=60)
