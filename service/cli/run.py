"""Run commands: `adaptinf serve` (embedded: API + one worker), `adaptinf worker`, `adaptinf reap`,
`adaptinf models build`.

The embedded mode runs exactly the production code path: a real `celery worker` subprocess on the
same broker and database as the API, never eager mode.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from core.presets import PRETRAINED
from service.broker import QUEUES
from service.config import Settings, get_settings

log = logging.getLogger("adaptinf.serve")

WORKER_STOP_SECONDS = 30.0  # warm shutdown lets the current task finish; past this it is killed


def _use_data_dir(data_dir: Path | None) -> Settings:
    """Apply --data-dir (as ADAPTINF_DATA_DIR, so child processes see it too) and load settings."""
    if data_dir is not None:
        os.environ["ADAPTINF_DATA_DIR"] = str(data_dir.resolve())
    get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def _queues(text: str) -> list[str]:
    queues = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in queues if q not in QUEUES]
    if not queues or unknown:
        raise argparse.ArgumentTypeError(f"--queues must be a comma-separated subset of {','.join(QUEUES)}, got {text!r}")
    return queues


def worker_argv(queues: list[str], concurrency: int, pool: str | None = None, loglevel: str = "INFO") -> list[str]:
    """The `celery worker` command line; one task at a time per process (prefetch 1, acks late)."""
    pool = pool or ("solo" if concurrency == 1 else "prefork")
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", ",".join(queues), "-c", str(concurrency), "--pool", pool, "--loglevel", loglevel,
        # Unique node name per process: two workers on one host must not clash.
        "-n", f"adaptinf-{os.getpid()}@%h",
        # No mingle/gossip: SQL holds the job state, so syncing revokes between workers buys nothing.
        "--without-mingle", "--without-gossip",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    _use_data_dir(args.data_dir)
    argv = worker_argv(args.queues, args.concurrency, args.pool, args.loglevel)
    os.execv(sys.executable, argv)  # become the celery worker: signals go straight to it
    return 0  # not reached


def _first_start_admin_key(settings: Settings) -> str | None:
    """On a database without owners, create owner "admin" and a key for it; return the key."""
    from sqlalchemy import select

    from service.auth import create_api_key, create_owner
    from service.db.models import Owner
    from service.db.session import session_scope

    with session_scope(settings.resolved_database_url) as session:
        if session.scalar(select(Owner.id).limit(1)) is not None:
            return None
        _, secret = create_api_key(session, create_owner(session, "admin"), name="admin")
        return secret


class WorkerProcess:
    """The embedded worker subprocess, restarted if it dies while the API runs."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        # Own session: a Ctrl-C in the terminal reaches only `serve`, which then stops the worker.
        self.proc = subprocess.Popen(self.argv, start_new_session=True)
        if not self._watcher.is_alive():
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            code = self.proc.wait()
            if self._stopping.wait(2.0):
                return
            log.error("worker exited with code %s; restarting it", code)
            self.start()

    def stop(self) -> int | None:
        self._stopping.set()
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)  # celery: warm shutdown
        try:
            return self.proc.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("worker did not stop in %ss; killing it (its job's lease will expire and be retried)",
                        WORKER_STOP_SECONDS)
            self.proc.kill()
            return self.proc.wait()


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.cli.admin import upgrade_database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _use_data_dir(args.data_dir)
    upgrade_database(settings.resolved_database_url)
    key = _first_start_admin_key(settings)
    if key:
        print("=" * 72, "First start: created owner 'admin'. Its API key, shown only this once:",
              f"ADAPTINF_API_KEY={key}", "=" * 72, sep="\n", flush=True)
    worker = WorkerProcess(worker_argv(list(QUEUES), 1, "solo"))
    worker.start()
    print(f"adaptinf: data in {settings.data_dir.resolve()}; API on http://{args.host}:{args.port}", flush=True)
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal to the
    # handlers it found; these record it instead of dying, so the worker is stopped below.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        uvicorn.run("service.main:create_app", factory=True, host=args.host, port=args.port, log_level="info")
    finally:
        code = worker.stop()
        print(f"adaptinf: worker stopped (exit code {code}); bye", flush=True)
    return 0


def cmd_reap(args: argparse.Namespace) -> int:
    # A child process, as for `serve`'s worker: the service never imports the workers' code.
    _use_data_dir(args.data_dir)
    code = subprocess.run([sys.executable, "-m", "workers.reaper"], check=False).returncode
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N


def cmd_models_build(args: argparse.Namespace) -> int:
    # A child process, as for `reap`: building a model is the workers' code.
    settings = _use_data_dir(args.data_dir)
    command = [sys.executable, "-m", "workers.engine.models.build", args.name, "--cache", str(settings.preset_dir)]
    code = subprocess.run(command, check=False).returncode
    return code if code >= 0 else 128 - code


def register(subparsers: argparse._SubParsersAction) -> None:
    data_dir = {"type": Path, "default": None, "help": "data directory (default: $ADAPTINF_DATA_DIR or ./adaptinf-data)"}
    p = subparsers.add_parser("serve", help="Embedded mode: migrate, then run the API and one worker for all queues.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", **data_dir)
    p.set_defaults(func=cmd_serve)

    w = subparsers.add_parser("worker", help="Run a Celery worker for some queues.")
    w.add_argument("--queues", type=_queues, default=list(QUEUES), help=f"comma-separated (default: {','.join(QUEUES)})")
    w.add_argument("--concurrency", type=int, default=1, help="tasks run at once (default: 1)")
    w.add_argument("--pool", choices=("solo", "prefork", "threads"), default=None,
                   help="default: solo for concurrency 1, else prefork")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--data-dir", **data_dir)
    w.set_defaults(func=cmd_worker)

    r = subparsers.add_parser("reap", help="One reaper pass: re-queue jobs of lost workers, re-send lost messages.")
    r.add_argument("--data-dir", **data_dir)
    r.set_defaults(func=cmd_reap)

    m = subparsers.add_parser("models", help="Pretrained model presets.")
    msub = m.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    b = msub.add_parser("build", help="Build a pretrained preset offline into the preset cache (a round's "
                        "first use builds it too). Prints its directory and build report.")
    b.add_argument("name", choices=PRETRAINED, metavar="NAME",
                   help=f"one of: {', '.join(PRETRAINED)}")
    b.add_argument("--data-dir", **data_dir)
    b.set_defaults(func=cmd_models_build)
