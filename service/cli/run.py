"""Run commands: `adaptinf serve` (embedded: API + two workers), `adaptinf api`, `adaptinf worker`,
`adaptinf worker-health`, `adaptinf reap`, `adaptinf models build`.

The embedded mode runs exactly the production code path: real `celery worker` subprocesses on the
same broker and database as the API, never eager mode. Ingest has a worker of its own there, so
one owner's long round never holds back another owner's upload.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from core.presets import PRETRAINED
from core.worker_health import EXIT_CONFIG, read_heartbeat
from service.broker import QUEUES, broker_ping
from service.cli.worker_stack import require_worker_stack
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


def worker_argv(queues: list[str], concurrency: int, pool: str | None = None, loglevel: str = "INFO",
                name: str = "") -> list[str]:
    """The `celery worker` command line; one task at a time per process (prefetch 1, acks late).
    `name` tells apart two workers started by one process (`serve`'s)."""
    pool = pool or ("solo" if concurrency == 1 else "prefork")
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-Q", ",".join(queues), "-c", str(concurrency), "--pool", pool, "--loglevel", loglevel,
        # Unique node name per process: two workers on one host must not clash.
        "-n", f"adaptinf-{os.getpid()}{'-' + name if name else ''}@%h",
        # No mingle/gossip: SQL holds the job state, so syncing revokes between workers buys nothing.
        "--without-mingle", "--without-gossip",
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    require_worker_stack()
    if args.heartbeat_file is not None:
        os.environ["ADAPTINF_WORKER_HEARTBEAT_FILE"] = str(args.heartbeat_file.resolve())
    settings = _use_data_dir(args.data_dir)
    if settings.worker_metrics_port is not None:
        _fresh_metrics_dir()  # task processes write their metrics there; the worker's server adds them up
    argv = worker_argv(args.queues, args.concurrency, args.pool, args.loglevel)
    os.execv(sys.executable, argv)  # become the celery worker: signals go straight to it
    return 0  # not reached


def _fresh_metrics_dir() -> None:
    """Give this process tree an empty PROMETHEUS_MULTIPROC_DIR: a new temp folder, or the one set,
    emptied of a previous run's files (they would count again)."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not given:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="adaptinf-metrics-")
        return
    folder = Path(given)
    folder.mkdir(parents=True, exist_ok=True)
    # prometheus_client's own files only (counter_<pid>.db, gauge_livesum_<pid>.db ...): a folder
    # pointed elsewhere by mistake (the data dir, with its adaptinf.db) loses nothing else
    for kind in ("counter", "gauge", "histogram", "summary"):
        for stale in folder.glob(f"{kind}_*.db"):
            stale.unlink(missing_ok=True)


def cmd_api(args: argparse.Namespace) -> int:
    _use_data_dir(args.data_dir)
    _fresh_metrics_dir()  # before uvicorn imports prometheus_client, which reads it once
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app", "--host", args.host,
            "--port", str(args.port), "--workers", str(args.workers)]
    os.execv(sys.executable, argv)
    return 0  # not reached


def cmd_worker_health(args: argparse.Namespace) -> int:
    """Exit 0 if the worker's heartbeat is fresh (and the broker answers), else 1; one line either way."""
    if args.heartbeat_file is not None:
        os.environ["ADAPTINF_WORKER_HEARTBEAT_FILE"] = str(args.heartbeat_file.resolve())
    get_settings.cache_clear()
    settings = get_settings()
    max_age = args.max_age if args.max_age is not None else 3 * settings.heartbeat_seconds
    state = read_heartbeat(settings.heartbeat_file, max_age)
    if state.healthy and not args.skip_broker and not broker_ping(settings):
        print(f"unhealthy: {state.message}, but the broker at ADAPTINF_BROKER_URL does not answer", flush=True)
        return 1
    print(f"{'ok' if state.healthy else 'unhealthy'}: {state.message}", flush=True)
    return 0 if state.healthy else 1


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
    """The embedded worker subprocess, restarted if it dies while the API runs, unless it refused
    to start (EXIT_CONFIG: its configuration is wrong, a restart would refuse again); then
    `on_refused` is called."""

    def __init__(self, argv: list[str], on_refused: Callable[[], None] = lambda: None,
                 env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.on_refused = on_refused
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)

    def start(self) -> None:
        # Own session: a Ctrl-C in the terminal reaches only `serve`, which then stops the worker.
        self.proc = subprocess.Popen(self.argv, start_new_session=True, env=self.env)
        if not self._watcher.is_alive():
            self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.is_set():
            code = self.proc.wait()
            if code == EXIT_CONFIG and not self._stopping.is_set():
                log.error("the worker refused to start (its message is above); stopping")
                self._stopping.set()
                self.on_refused()
                return
            if self._stopping.wait(2.0):
                return
            log.error("worker exited with code %s; restarting it", code)
            self.start()

    def terminate(self) -> None:
        """Ask for a warm shutdown (and no restart), once; `stop` then waits for it."""
        if self._stopping.is_set():
            return  # a second SIGTERM would cut celery's warm shutdown short (it dies by the signal)
        self._stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # celery: warm shutdown

    def stop(self) -> int | None:
        self.terminate()
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
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

    require_worker_stack()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _use_data_dir(args.data_dir)
    upgrade_database(settings.resolved_database_url)
    key = _first_start_admin_key(settings)
    if key:
        print("=" * 72, "First start: created owner 'admin'. Its API key, shown only this once:",
              f"ADAPTINF_API_KEY={key}", "=" * 72, sep="\n", flush=True)
    server = uvicorn.Server(uvicorn.Config("service.main:create_app", factory=True, host=args.host, port=args.port,
                                           log_level="info"))
    refused = threading.Event()

    def stop_serving() -> None:  # from the worker's watcher thread: uvicorn polls this flag
        refused.set()
        server.should_exit = True

    # Two consumers: rounds (gpu, select, train) in one, ingest in the other, so a long round of one
    # owner cannot block another owner's upload. The ingest worker gets its own heartbeat file and no
    # metrics port (the round worker has them).
    rounds_worker = WorkerProcess(worker_argv([q for q in QUEUES if q != "ingest"], 1, "solo"),
                                  on_refused=stop_serving)
    ingest_env = {k: v for k, v in os.environ.items() if k != "ADAPTINF_WORKER_METRICS_PORT"}
    ingest_env["ADAPTINF_WORKER_HEARTBEAT_FILE"] = str(settings.heartbeat_file.with_suffix(".ingest.heartbeat"))
    ingest_worker = WorkerProcess(worker_argv(["ingest"], 1, "solo", name="ingest"), on_refused=stop_serving,
                                  env=ingest_env)
    workers = {"worker": rounds_worker, "ingest worker": ingest_worker}
    for worker in workers.values():
        worker.start()
    blobs = f", blobs in {settings.blob_store_url}" if settings.blob_store_url else ""
    print(f"adaptinf: data in {settings.data_dir.resolve()}{blobs}; API on http://{args.host}:{args.port}", flush=True)
    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown, then re-raises the signal to the
    # handlers it found; these record it instead of dying, so the worker is stopped below.
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    try:
        server.run()
    finally:
        for worker in workers.values():
            worker.terminate()  # both at once: each may take WORKER_STOP_SECONDS to finish its task
        for name, worker in workers.items():
            print(f"adaptinf: {name} stopped (exit code {worker.stop()})", flush=True)
        print("adaptinf: bye", flush=True)
    if refused.is_set():
        return EXIT_CONFIG
    return 0 if server.started else 3  # uvicorn.run's own exit code when the server could not start


def cmd_reap(args: argparse.Namespace) -> int:
    # A child process, as for `serve`'s worker: the service never imports the workers' code.
    _use_data_dir(args.data_dir)
    code = subprocess.run([sys.executable, "-m", "workers.reaper"], check=False).returncode
    return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128 + N


def cmd_models_build(args: argparse.Namespace) -> int:
    # A child process, as for `reap`: building a model is the workers' code.
    require_worker_stack()
    settings = _use_data_dir(args.data_dir)
    command = [sys.executable, "-m", "workers.engine.models.build", args.name, "--cache", str(settings.preset_dir)]
    code = subprocess.run(command, check=False).returncode
    return code if code >= 0 else 128 - code


def register(subparsers: argparse._SubParsersAction) -> None:
    data_dir = {"type": Path, "default": None, "help": "data directory (default: $ADAPTINF_DATA_DIR or ./adaptinf-data)"}
    p = subparsers.add_parser("serve", help="Embedded mode: migrate, then run the API, a worker for rounds and one "
                              "for ingest.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", **data_dir)
    p.set_defaults(func=cmd_serve)

    a = subparsers.add_parser("api", help="Run the API alone (uvicorn), in N processes whose Prometheus "
                              "metrics /metrics adds up.")
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8000)
    a.add_argument("--workers", type=int, default=1, help="API processes (default: 1)")
    a.add_argument("--data-dir", **data_dir)
    a.set_defaults(func=cmd_api)

    w = subparsers.add_parser("worker", help="Run a Celery worker for some queues.")
    w.add_argument("--queues", type=_queues, default=list(QUEUES), help=f"comma-separated (default: {','.join(QUEUES)})")
    w.add_argument("--concurrency", type=int, default=1, help="tasks run at once (default: 1)")
    w.add_argument("--pool", choices=("solo", "prefork", "threads"), default=None,
                   help="default: solo for concurrency 1, else prefork")
    w.add_argument("--loglevel", default="INFO")
    w.add_argument("--data-dir", **data_dir)
    heartbeat = {"type": Path, "default": None, "help": "the worker's heartbeat file (default: "
                 "$ADAPTINF_WORKER_HEARTBEAT_FILE or adaptinf-worker.heartbeat in the temp folder)"}
    w.add_argument("--heartbeat-file", **heartbeat)
    w.set_defaults(func=cmd_worker)

    h = subparsers.add_parser("worker-health", help="Exit 0 if this host's worker is up: its heartbeat file is "
                              "fresh and the broker answers (a container healthcheck).")
    h.add_argument("--heartbeat-file", **heartbeat)
    h.add_argument("--max-age", type=float, default=None,
                   help="seconds a heartbeat stays fresh (default: 3 x ADAPTINF_HEARTBEAT_SECONDS)")
    h.add_argument("--skip-broker", action="store_true", help="check only the heartbeat file")
    h.set_defaults(func=cmd_worker_health)

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
