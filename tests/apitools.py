"""Helpers for API tests (a module of its own: several conftest.py files exist, so
`from conftest import ...` would be ambiguous)."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Caller:
    """An owner with a key, and headers that authenticate as them."""

    owner_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_caller(database_url: str, name: str | None = None) -> Caller:
    from service.auth import create_api_key, create_owner
    from service.db.session import session_scope

    with session_scope(database_url) as session:
        owner = create_owner(session, name or f"owner-{secrets.token_hex(4)}")
        _, key = create_api_key(session, owner)
        return Caller(owner_id=owner.id, key=key)


def count_rows(database_url: str, model) -> int:  # noqa: ANN001
    from sqlalchemy import func, select

    from service.db.session import session_scope

    with session_scope(database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def blob_files(settings) -> list[Path]:  # noqa: ANN001
    """Every file in the blob store, temp files included."""
    root = settings.blob_dir
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def upload_leftovers(settings) -> list[Path]:  # noqa: ANN001
    uploads = settings.work_dir / "uploads"
    return list(uploads.rglob("*")) if uploads.exists() else []


def post_dataset(client, caller: Caller, file: Path, images: Path | None = None, name: str | None = None, **kw):  # noqa: ANN001, ANN201
    files = {"file": (file.name, file.read_bytes())}
    if images is not None:
        files["images"] = (images.name, images.read_bytes())
    data = {"name": name} if name is not None else {}
    headers = {**caller.headers, **kw.pop("headers", {})}
    return client.post("/v1/datasets", files=files, data=data, headers=headers, **kw)


@contextmanager
def memory_queue(name: str) -> Iterator[Callable[[], list]]:
    """A drain() for one queue of kombu's in-memory broker (per process), emptied first."""
    from kombu import Connection

    with Connection("memory://") as conn:
        queue = conn.SimpleQueue(name)
        queue.clear()

        def drain() -> list:
            out = []
            while True:
                try:
                    msg = queue.get(block=False)
                except queue.Empty:
                    return out
                msg.ack()
                out.append(msg)

        yield drain
        queue.close()


@contextmanager
def serve_app(settings) -> Iterator[str]:  # noqa: ANN001
    """The real app under uvicorn on a free port, in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from service.main import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
