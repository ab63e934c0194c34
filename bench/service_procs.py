"""The service as a user runs it, for the benchmarks: child processes, an API key, resident memory.

- `EmbeddedService`: `adaptinf serve` (SQLite, the filesystem broker, the API and one worker).
- `DistributedService`: PostgreSQL and Redis of this machine (a fresh database and Redis database
  per run), `adaptinf migrate`, the API under uvicorn, and N `adaptinf worker` processes.

Both give `.api` (the Python client with a key of their own), `.api_pid` and `.worker_pids()`;
`RssSampler` records the resident memory of their processes while a benchmark runs.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from service.client import Client as Api

GB = 1024**3

ADAPTINF = str(Path(sys.executable).parent / "adaptinf")
_DEPLOYMENT = ("ADAPTINF_DATA_DIR", "ADAPTINF_DATABASE_URL", "ADAPTINF_BROKER_URL", "ADAPTINF_API_URL", "ADAPTINF_API_KEY")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Service:
    """What both modes share: the env, the log, readiness, the key, stopping."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        # The caller's settings pass through, except those that say which service this is.
        self.env = {**{k: v for k, v in os.environ.items() if k not in _DEPLOYMENT},
                    "ADAPTINF_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **env}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.procs: list[subprocess.Popen] = []
        self.api: Api | None = None

    def spawn(self, argv: list[str]) -> subprocess.Popen:
        proc = subprocess.Popen(argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{' '.join(map(str, dead[0].args[:3]))} exited with {dead[0].returncode}; "
                                   f"see {self.log_path}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the service was not ready after {timeout:.0f} s; see {self.log_path}")

    def make_key(self) -> None:
        out = subprocess.run([ADAPTINF, "keys", "create", "--name", "bench"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        self.api = Api(self.url, out.strip().splitlines()[-1], timeout=600)

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        for proc in reversed(self.procs):
            _stop(proc)
        self.log.close()

    def __enter__(self) -> "_Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedService(_Service):
    """`adaptinf serve` in a child process: the API in it, one worker as its child."""

    mode = "embedded"

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        super().__init__(data_dir, env or {})
        try:
            self.serve = self.spawn([ADAPTINF, "serve", "--port", str(self.port)])
            self.wait_ready()
            self.make_key()
        except BaseException:
            self.stop()  # never leave a server running on a deleted data directory
            raise

    @property
    def api_pid(self) -> int:
        return self.serve.pid

    def worker_pids(self) -> list[int]:
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.serve.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


class DistributedService(_Service):
    """A fresh PostgreSQL database and Redis database, the API under uvicorn, `workers` workers
    each consuming every queue (one task at a time, as `adaptinf worker` runs)."""

    mode = "postgres"

    def __init__(self, data_dir: Path, *, workers: int = 2, pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/test",
                 redis_url: str = "redis://127.0.0.1:6379/13", env: dict[str, str] | None = None) -> None:
        import psycopg
        import redis

        self.db = f"adaptinf_bench_{uuid.uuid4().hex[:8]}"
        self.pg_admin_url = pg_admin_url
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        redis.Redis.from_url(redis_url).flushdb()
        db_url = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + self.db
        super().__init__(data_dir, {"ADAPTINF_DATABASE_URL": db_url, "ADAPTINF_BROKER_URL": redis_url, **(env or {})})
        try:
            subprocess.run([ADAPTINF, "migrate"], env=self.env, check=True, capture_output=True)
            self.uvicorn = self.spawn([sys.executable, "-m", "uvicorn", "service.main:create_app", "--factory",
                                       "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"])
            self.workers = [self.spawn([ADAPTINF, "worker"])  # every queue, one task at a time
                            for _ in range(workers)]
            self.wait_ready()
            self.make_key()
        except BaseException:
            self.stop()
            raise

    @property
    def api_pid(self) -> int:
        return self.uvicorn.pid

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers if w.poll() is None]

    def stop(self) -> None:
        import psycopg

        super().stop()
        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of one process, 0 once it is gone. `VmRSS` is all of it, file pages it has
    mapped included (a memmapped feature matrix counts in full once touched); `RssAnon` is its
    own memory (heap, arrays), what the machine cannot simply drop and re-read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0


class RssSampler(threading.Thread):
    """VmRSS of the API and of every worker process, four times a second."""

    def __init__(self, svc: Any, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.svc, self.interval = svc, interval
        # (unix time, API VmRSS, largest worker VmRSS, largest worker RssAnon), bytes
        self.samples: list[tuple[float, int, int, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            pids = self.svc.worker_pids()
            self.samples.append((time.time(), rss_bytes(self.svc.api_pid), max(map(rss_bytes, pids), default=0),
                                 max((rss_bytes(p, "RssAnon") for p in pids), default=0)))
            self.halt.wait(self.interval)

    def peak(self, start: float, end: float, process: str) -> float:
        col = {"api": 1, "worker": 2, "worker_anon": 3}[process]
        inside = [s[col] for s in self.samples if start - self.interval <= s[0] <= end + self.interval]
        return round(max(inside, default=0) / GB, 3)
