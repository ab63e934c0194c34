"""Process helpers for the end-to-end tests: worker subprocesses, their environment, polling."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADAPTINF = Path(sys.executable).parent / "adaptinf"


@dataclass
class WorkerProc:
    proc: subprocess.Popen
    log: Path
    terminated: bool = False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """Ask for a warm shutdown (once: a second SIGTERM would not be any gentler)."""
        if self.proc.poll() is None and not self.terminated:
            self.proc.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def service_env(settings) -> dict[str, str]:  # noqa: ANN001
    """The ADAPTINF_* environment that makes a subprocess see exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")}
    env.update(
        ADAPTINF_DATA_DIR=str(settings.data_dir),
        ADAPTINF_LEASE_SECONDS=str(settings.lease_seconds),
        ADAPTINF_HEARTBEAT_SECONDS=str(settings.heartbeat_seconds),
        ADAPTINF_REAPER_INTERVAL_SECONDS=str(settings.reaper_interval_seconds),
        ADAPTINF_MAX_ATTEMPTS=str(settings.max_attempts),
        PYTHONUNBUFFERED="1",
    )
    if settings.database_url:
        env["ADAPTINF_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["ADAPTINF_BROKER_URL"] = settings.broker_url
    if settings.blob_store_url:
        env.update(ADAPTINF_BLOB_STORE=settings.blob_store_url, ADAPTINF_S3_ENDPOINT_URL=settings.s3_endpoint_url)
    return env


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
