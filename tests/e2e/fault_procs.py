"""The fault matrix's processes: a private redis-server it may kill and restart, gated Celery
workers (fault_app.py) it may SIGKILL whole or one task process at a time, the API under uvicorn
it may SIGKILL mid-request, and the gates that hold a job where a fault must land."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_procs import ADAPTINF, REPO, service_env, wait_for

E2E = Path(__file__).resolve().parent


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of this test alone on a free port, with nothing persisted: a restart loses
    every queued message, as a broker that crashed without persistence does."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (the fault matrix restarts a broker of its own)")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 10, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@dataclass
class Gates:
    """Files that tell the fault_app workers where to hold a job (see fault_app.py)."""

    root: Path

    def arm(self, kind: str, point: str) -> None:
        (self.root / f"{kind}.{point}.armed").touch()

    def wait_held(self, kind: str, point: str, timeout: float = 180) -> dict[str, Any]:
        """{"job_id", "pid"} of the job the gate holds, once one does."""
        held = self.root / f"{kind}.{point}.held"
        wait_for(held.exists, timeout, f"a {kind} job held at its {point}", 0.05)
        return json.loads(held.read_text())

    def release(self, kind: str, point: str) -> None:
        (self.root / f"{kind}.{point}.held").unlink()

    def clear(self) -> None:
        """Disarm every gate and release every held job (after a case, whatever its outcome)."""
        for path in self.root.iterdir():
            path.unlink(missing_ok=True)


def process_env(settings, extra: dict[str, str] | None = None) -> dict[str, str]:  # noqa: ANN001
    """service_env plus what the matrix's processes share: one torch thread each (two task
    processes on two cores; and the same thread count everywhere, so every process computes the
    same floats), the data dir's disk floor, and the gates."""
    env = service_env(settings)
    env.update(ADAPTINF_DEVICE="cpu", ADAPTINF_TORCH_THREADS="1",
               ADAPTINF_MIN_FREE_DISK_MB=str(settings.min_free_disk_mb), **(extra or {}))
    return env


@dataclass
class GatedWorker:
    """One `celery -A fault_app worker` on every queue, two prefork task processes, in a process
    group of its own (a whole-worker kill takes its task processes with it)."""

    settings: Any
    gates: Gates
    log: Path
    proc: subprocess.Popen = field(init=False)

    def __post_init__(self) -> None:
        from service.cli.run import worker_argv

        argv = worker_argv(["ingest", "gpu", "select", "train"], concurrency=2, name=self.log.stem)
        argv[argv.index("workers.celery_app")] = "fault_app"
        env = process_env(self.settings, {
            "FAULT_GATES_DIR": str(self.gates.root), "PYTHONPATH": os.pathsep.join([str(E2E), str(REPO)]),
            "ADAPTINF_WORKER_HEARTBEAT_FILE": str(self.log.with_suffix(".heartbeat"))})
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"worker exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            return " ready." in self.output()

        wait_for(ready, timeout, "the gated worker to be ready")

    def kill_all(self) -> None:
        """SIGKILL the worker and its task processes at once: a host or container dying."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # all gone already
            pass
        self.proc.wait(10)



class ApiProcess:
    """`adaptinf api` (uvicorn, one process) on a free port."""

    def __init__(self, settings, log: Path, extra: dict[str, str] | None = None) -> None:  # noqa: ANN001
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([str(ADAPTINF), "api", "--port", str(self.port)], cwd=REPO,
                                         env=process_env(settings, extra), stdout=out, stderr=subprocess.STDOUT)

    def wait_up(self, timeout: float = 60) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"API exited:\n{self.log.read_text(errors='replace')[-3000:]}"
            try:
                return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout, "the API to answer /healthz", 0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def slow_post(port: int, path: str, headers: dict[str, str], body: bytes, sent_before_stop: int,
              chunk: int = 64 * 1024, pause: float = 0.02):  # noqa: ANN201 - the open socket
    """Send a request's headers and its first `sent_before_stop` body bytes, slowly; return the
    socket, still open (the rest of the body never comes)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    sock.sendall("\r\n".join(head).encode())
    for start in range(0, sent_before_stop, chunk):
        sock.sendall(body[start : min(start + chunk, sent_before_stop)])
        time.sleep(pause)
    return sock
