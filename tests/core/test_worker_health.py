"""The worker's heartbeat file: fresh, stale, missing, its process gone; the writer removes it on stop."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from core.worker_health import HeartbeatWriter, read_heartbeat, write_heartbeat


def test_a_fresh_heartbeat_of_a_live_process_is_healthy(tmp_path):
    path = tmp_path / "hb"
    write_heartbeat(path, {"queues": "gpu,train", "device": "cpu"})
    state = read_heartbeat(path, max_age=30)
    assert state.healthy and "queues gpu,train" in state.message and "device cpu" in state.message


def test_missing_stale_and_dead_heartbeats_are_unhealthy(tmp_path):
    path = tmp_path / "hb"
    missing = read_heartbeat(path, max_age=30)
    assert not missing.healthy and "no heartbeat" in missing.message

    write_heartbeat(path, {})
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "beat_at": time.time() - 100}))
    stale = read_heartbeat(path, max_age=30)
    assert not stale.healthy and "100s ago (limit 30s)" in stale.message

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(json.dumps({**body, "pid": int(dead.stdout)}))
    gone = read_heartbeat(path, max_age=30)
    assert not gone.healthy and "the process is gone" in gone.message


def test_the_writer_refreshes_the_file_and_removes_it_on_stop(tmp_path):
    path = tmp_path / "hb"
    writer = HeartbeatWriter(path, interval=0.05, info=lambda: {"queues": "ingest"})
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        first = json.loads(path.read_text())["beat_at"]
        time.sleep(0.2)
        assert json.loads(path.read_text())["beat_at"] > first
    finally:
        writer.stop()
    assert not path.exists()
