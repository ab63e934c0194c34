"""A worker's health, as both sides see it: the exit code of a worker that refuses to start, and
its liveness file, which the worker rewrites every few seconds and `adaptinf worker-health` reads
(one JSON object, replaced whole so a reader never sees half of it)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: sysexits.h EX_CONFIG: the worker refused to start because of its configuration (a device it
#: cannot use). `adaptinf serve` does not restart an embedded worker that exits with it.
EXIT_CONFIG = 78


def write_heartbeat(path: Path, info: dict[str, Any]) -> None:
    """Record now (wall clock, `beat_at`), this process and host, and `info`."""
    body = {**info, "pid": os.getpid(), "hostname": socket.gethostname(), "beat_at": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # rename, no fsync (core.files.atomic_write's): a reader must never see half a file, but a
    # heartbeat lost in a crash is what the check is for, and a sync every beat would cost the disk
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


@dataclass(frozen=True)
class HeartbeatState:
    healthy: bool
    message: str


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def read_heartbeat(path: Path, max_age: float) -> HeartbeatState:
    """Whether the file is younger than `max_age` seconds and, on this host, its process lives."""
    try:
        beat = json.loads(path.read_text())
    except FileNotFoundError:
        return HeartbeatState(False, f"no heartbeat at {path}: the worker is not running or has not finished starting")
    except (OSError, ValueError) as exc:
        return HeartbeatState(False, f"unreadable heartbeat at {path}: {exc}")
    age = time.time() - float(beat.get("beat_at", 0))
    who = f"worker pid {beat.get('pid')} on {beat.get('hostname')}"
    if age > max_age:
        return HeartbeatState(False, f"{who}: last heartbeat {age:.0f}s ago (limit {max_age:g}s)")
    if beat.get("hostname") == socket.gethostname() and not _pid_alive(int(beat.get("pid", 0))):
        return HeartbeatState(False, f"{who}: the process is gone")
    details = ", ".join(f"{k} {beat[k]}" for k in ("queues", "device") if beat.get(k))
    return HeartbeatState(True, f"{who} ({details}): heartbeat {age:.1f}s ago")


class HeartbeatWriter(threading.Thread):
    """Rewrites `path` every `interval` seconds until stopped; removes it on stop."""

    def __init__(self, path: Path, interval: float, info: Callable[[], dict[str, Any]]) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.path, self.interval, self.info = path, interval, info
        self._stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                write_heartbeat(self.path, self.info())
            except OSError:
                pass  # a full disk: the file goes stale and the health check says so
            if self._stop_event.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(5)
        self.path.unlink(missing_ok=True)
