"""`adaptinf serve` as a user runs it: SQLite + filesystem broker in a fresh data dir, the API and
its two worker subprocesses; upload, poll, restart (no second key), SIGTERM exits cleanly; an
upload is ingested while the round worker is held."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import datagen
import httpx
import pytest
from e2e_procs import ADAPTINF, REPO, wait_for

pytestmark = pytest.mark.slow


class Served:
    """A running `adaptinf serve`, its output collected by a thread (so the pipe never fills)."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        extra, env = env or {}, {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")}
        env |= {"PYTHONUNBUFFERED": "1", **extra}
        self.proc = subprocess.Popen(
            [str(ADAPTINF), "serve", "--port", str(port), "--data-dir", str(data_dir)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.base = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_up(self, timeout: float = 90) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"serve exited early:\n{self.text[-3000:]}"
            return "Uvicorn running" in self.text and " ready." in self.text  # API and worker

        wait_for(up, timeout, "adaptinf serve to start")

    def worker_pid(self, name: str = "") -> int | None:
        """The pid of this serve's worker process (node name adaptinf-<serve pid>[-name]@host), if running."""
        needle = f"adaptinf-{self.proc.pid}{'-' + name if name else ''}@".encode()
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if needle in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return int(pid)
            except OSError:
                continue
        return None

    def worker_alive(self) -> bool:
        return self.worker_pid() is not None or self.worker_pid("ingest") is not None

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_embedded_upload_restart_and_clean_exit(tmp_path: Path) -> None:
    dataset, archive = datagen.write_llava_dataset(tmp_path / "ds", 12, multi_image=True, fmt="jsonl")
    n_images = len(datagen.build_records(12, multi_image=True)[1])
    data_dir = tmp_path / "data"

    served = Served(data_dir, free_port())
    try:
        served.wait_up()
        keys = [line.split("=", 1)[1] for line in served.lines if line.startswith("ADAPTINF_API_KEY=")]
        assert len(keys) == 1, served.text
        headers = {"Authorization": f"Bearer {keys[0]}"}
        with httpx.Client(base_url=served.base, headers=headers, timeout=30) as http:
            assert http.get("/readyz").json()["checks"] == {"database": "ok", "broker": "ok", "disk": "ok"}
            with dataset.open("rb") as f, archive.open("rb") as a:
                r = http.post("/v1/datasets", files={"file": (dataset.name, f), "images": (archive.name, a)})
            assert r.status_code == 202, r.text
            url = f"/v1/datasets/{r.json()['id']}"
            body = wait_for(lambda: (b := http.get(url).json())["status"] == "ready" and b, 60, "ingest", 0.25)
            assert (body["num_samples"], body["num_images"]) == (12, n_images)
            # The dataset turns ready in the task's transaction; the job is marked succeeded just after.
            job_url = f"/v1/jobs/{body['job_id']}"
            job = wait_for(lambda: (j := http.get(job_url).json())["status"] in ("succeeded", "failed", "cancelled") and j,
                           30, "job", 0.1)
            assert (job["status"], job["attempts"]) == ("succeeded", 1)
        assert served.terminate() == 0, served.text[-3000:]
    finally:
        if served.proc.poll() is None:
            served.proc.kill()
    assert "adaptinf: worker stopped (exit code 0)" in served.text
    assert "adaptinf: ingest worker stopped (exit code 0)" in served.text
    assert not served.worker_alive()
    assert (data_dir / "adaptinf.db").is_file() and (data_dir / "broker" / "queue").is_dir()

    again = Served(data_dir, free_port())  # a second start: same data, no new key
    try:
        again.wait_up()
        assert "ADAPTINF_API_KEY=" not in again.text
        with httpx.Client(base_url=again.base, headers=headers, timeout=30) as http:
            assert http.get(url).json()["status"] == "ready"
        start = time.monotonic()
        assert again.terminate() == 0, again.text[-3000:]
        assert time.monotonic() - start < 30
    finally:
        if again.proc.poll() is None:
            again.proc.kill()
    assert not again.worker_alive()


def test_serve_ingests_while_the_round_worker_is_held(tmp_path: Path) -> None:
    """The round worker stopped (SIGSTOP: as held as by the longest round) does not hold back an upload."""
    dataset, _ = datagen.write_llava_dataset(tmp_path / "ds", 6, with_images=False, text_only=True, fmt="jsonl")
    served = Served(tmp_path / "data", free_port())
    held = None
    try:
        served.wait_up()
        key = next(line.split("=", 1)[1] for line in served.lines if line.startswith("ADAPTINF_API_KEY="))
        held = served.worker_pid()
        assert held is not None and served.worker_pid("ingest") not in (None, held)
        assert b"gpu,select,train" in Path(f"/proc/{held}/cmdline").read_bytes()
        os.kill(held, signal.SIGSTOP)
        with httpx.Client(base_url=served.base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            with dataset.open("rb") as f:
                r = http.post("/v1/datasets", files={"file": (dataset.name, f)})
            assert r.status_code == 202, r.text
            url = f"/v1/datasets/{r.json()['id']}"
            body = wait_for(lambda: (b := http.get(url).json())["status"] != "pending" and b, 60, "ingest", 0.25)
            assert (body["status"], body["num_samples"]) == ("ready", 6), body
        os.kill(held, signal.SIGCONT)
        held = None
        assert served.terminate() == 0, served.text[-3000:]
    finally:
        if held is not None:
            os.kill(held, signal.SIGCONT)
        if served.proc.poll() is None:
            served.proc.kill()
    assert not served.worker_alive()
