"""The worker process's start-up settings: torch's CPU threads, and the blob store it checks first."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.worker_health import EXIT_CONFIG
from service.config import Settings, get_settings


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    get_settings.cache_clear()


def test_torch_threads_setting_limits_the_task_process(monkeypatch, restore_threads) -> None:
    import workers.celery_app as app

    monkeypatch.setattr(app, "_threads_set", False)
    monkeypatch.delenv("ADAPTINF_TORCH_THREADS", raising=False)
    get_settings.cache_clear()
    torch.set_num_threads(2)
    app._limit_torch_threads()  # unset: torch keeps its own
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("ADAPTINF_TORCH_THREADS", "1")
    get_settings.cache_clear()
    app._limit_torch_threads()  # the first task of the process sets it
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    app._limit_torch_threads()  # and later tasks leave it alone
    assert torch.get_num_threads() == 2


def test_torch_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="torch_threads"):
        Settings(torch_threads=0)


def test_a_worker_whose_bucket_does_not_exist_exits_at_start_naming_the_setting(tmp_path, s3_endpoint) -> None:
    repo, adaptinf = Path(__file__).resolve().parents[2], Path(sys.executable).parent / "adaptinf"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")} | s3_endpoint.env()
    env.update(ADAPTINF_DATA_DIR=str(tmp_path), ADAPTINF_DEVICE="cpu", ADAPTINF_BLOB_STORE="s3://no-bucket-here/b")
    done = subprocess.run([str(adaptinf), "worker", "--queues", "select"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_CONFIG, done.stderr[-2000:]
    refusal = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(refusal) == 1 and "s3://no-bucket-here/b (ADAPTINF_BLOB_STORE) does not exist" in refusal[0]
    assert " ready." not in done.stdout + done.stderr and "Traceback" not in done.stderr
