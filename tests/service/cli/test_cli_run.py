"""`adaptinf worker-health` against a real worker process (Redis DB 13, SQLite), and `adaptinf serve`
stopping when its embedded worker refuses its device."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redistools import flushed_redis

from core.worker_health import EXIT_CONFIG

REPO = Path(__file__).resolve().parents[3]
ADAPTINF = Path(sys.executable).parent / "adaptinf"
REDIS_URL = "redis://127.0.0.1:6379/13"  # this file's own Redis DB, flushed around it


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from flushed_redis(REDIS_URL)


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")}
    env.update(ADAPTINF_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **settings)
    return env


def _health(env: dict[str, str], heartbeat: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ADAPTINF), "worker-health", "--heartbeat-file", str(heartbeat)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.redis
@pytest.mark.slow
def test_worker_health_follows_a_real_worker(tmp_path: Path, redis_url: str) -> None:
    from service.cli.admin import upgrade_database

    db = f"sqlite:///{tmp_path / 'adaptinf.db'}"
    upgrade_database(db)  # the worker's reaper reads the jobs table
    env = _env(tmp_path, ADAPTINF_DATABASE_URL=db, ADAPTINF_BROKER_URL=redis_url, ADAPTINF_HEARTBEAT_SECONDS="0.5")
    heartbeat = tmp_path / "worker.heartbeat"
    before = _health(env, heartbeat)
    assert before.returncode == 1 and before.stdout.startswith("unhealthy: no heartbeat at")

    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([str(ADAPTINF), "worker", "--queues", "ingest,select", "--heartbeat-file", str(heartbeat)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while (ok := _health(env, heartbeat)).returncode != 0:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, ok.stdout
            time.sleep(0.5)
        assert ok.stdout.startswith(f"ok: worker pid {proc.pid} ") and "queues ingest,select" in ok.stdout
        # the broker is part of the check: pointed elsewhere, the same fresh heartbeat is unhealthy
        no_broker = _health({**env, "ADAPTINF_BROKER_URL": "redis://127.0.0.1:1/0"}, heartbeat)
        assert no_broker.returncode == 1 and "the broker at ADAPTINF_BROKER_URL does not answer" in no_broker.stdout

        proc.send_signal(signal.SIGTERM)  # warm shutdown: the heartbeat goes first
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    after = _health(env, heartbeat)
    assert after.returncode == 1 and after.stdout.startswith("unhealthy: no heartbeat at")


@pytest.mark.slow
def test_serve_stops_when_its_worker_refuses_the_device(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a usable GPU")
    env = _env(tmp_path, ADAPTINF_DEVICE="cuda")
    done = subprocess.run([str(ADAPTINF), "serve", "--port", "0"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == EXIT_CONFIG, out[-3000:]
    assert "refusing to start: ADAPTINF_DEVICE=cuda but torch" in out
    assert "restarting it" not in out and "Traceback" not in out
