"""A real pool for the dashboard's tests: two tiny rounds run end to end by the round tasks (no
Celery: the fake broker of tests/workers/rounds), two skills with held-out sets, and the API
served by uvicorn in a thread."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.workers.rounds.rounds_helpers import (
    POOL_CONFIG, RoundEnv, add_dataset, add_pool, close_round_env, make_round_env, start_round,
)

SHORT_ANSWERS = ("red", "blue", "outdoors", "a roof")  # exact match scores short answers only


@dataclass
class Dashboard:
    base_url: str
    key: str
    env: RoundEnv
    pool_id: str
    round_ids: list[str]

    def finish_rounds(self) -> None:
        """Deliver every job still waiting (the second round's select, train, finalize)."""
        self.env.drain()

    def get(self, path: str):  # noqa: ANN201
        import httpx

        return httpx.get(self.base_url + path, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)


def _skilled(env: RoundEnv, name: str, indices: list[int], skill: str, *, short: bool = False) -> str:
    """A ready dataset whose samples all carry `skill`; `short` gives them one-word answers."""
    from service.db.models import Dataset, Sample

    ds_id = add_dataset(env, name, indices)
    with env.factory() as s, s.begin():
        s.execute(update(Dataset).where(Dataset.id == ds_id).values(skill=skill, skill_counts={skill: len(indices)}))
        if short:
            for sample in s.scalars(select(Sample).where(Sample.dataset_id == ds_id)):
                messages = [dict(m) for m in sample.messages]
                messages[-1]["content"] = SHORT_ANSWERS[sample.position % 4]
                sample.messages = messages
    return ds_id


def _serve(app) -> tuple[str, object, threading.Thread]:  # noqa: ANN001
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture(scope="module")
def dashboard(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """Round 1 (skill vqa) succeeded; round 2 (skill caption) stopped before its select stage, so a
    test can watch it live and then `finish_rounds()`."""
    from service.auth import create_api_key
    from service.config import get_settings
    from service.db.models import Owner, Pool
    from service.main import create_app

    with pytest.MonkeyPatch.context() as mp:
        env = make_round_env(sqlite_template, tmp_path_factory.mktemp("dashboard"), mp, "dashboard")
        with env.factory() as session:
            _, key = create_api_key(session, session.get(Owner, env.owner_id))
            session.commit()
        vqa = _skilled(env, "vqa-train", list(range(14)), "vqa")
        caption = _skilled(env, "caption-train", list(range(14, 26)), "caption")
        evals = ((_skilled(env, "vqa-eval", list(range(40, 44)), "vqa", short=True), "vqa"),
                 (_skilled(env, "caption-eval", list(range(44, 48)), "caption", short=True), "caption"))
        # a pool cap under the first round's 14 samples: both rounds prune
        pool_id = add_pool(env, {**POOL_CONFIG, "pruning": {"max_pool_size": 10}}, eval_sets=evals)
        with env.factory() as s, s.begin():  # a readable name for the README's screenshots
            s.execute(update(Pool).where(Pool.id == pool_id).values(name="lifelong-demo"))
        first, _ = start_round(env, pool_id, [vqa], budget=8, seed=1)
        env.drain()
        second, _ = start_round(env, pool_id, [caption], budget=8, seed=2)
        env.drain(until_kind="round.select")
        base_url, server, thread = _serve(create_app(get_settings()))
        try:
            yield Dashboard(base_url, key, env, pool_id, [first, second])
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            close_round_env(env)
