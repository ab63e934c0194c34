"""Round tests without Celery: datasets written straight to SQL, and a fake broker that records
every job the stage machine sends so a test can deliver them (once, twice, or not at all)."""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datagen
import pytest

from service.config import Settings, get_settings
from service.db.models import Dataset, Sample
from service.db.session import get_engine, get_sessionmaker
from core.blobs import BlobStore

# Small and fast, yet several shards, clusters and training steps.
POOL_CONFIG = {
    "features": {"proj_dim": 64, "batch_size": 8},
    "selection": {"n_clusters": 3, "n_strata": 5},
    "training": {"batch_size": 4, "max_steps": 3},
    "pruning": {"max_pool_size": 18},  # forces pool-cap prunes in every round
    "shard_size": 6,
    "warmup_fraction": 0.2,
}


@dataclass
class RoundEnv:
    settings: Settings
    url: str
    owner_id: str
    sent: list[tuple[str, str]] = field(default_factory=list)

    @property
    def factory(self):  # noqa: ANN201
        return get_sessionmaker(self.url)

    @property
    def blobs(self) -> BlobStore:
        return self.settings.blob_store()

    def deliver(self, job_id: str, kind: str) -> dict:
        from workers.tasks.rounds import STAGE_TASKS, round_job

        return (round_job if kind == "round" else STAGE_TASKS[kind])(job_id)

    def drain(self, *, until_kind: str | None = None, twice: bool = False) -> list[tuple[str, str]]:
        """Deliver sent jobs in order until none is left (or the next is `until_kind`)."""
        delivered = []
        while self.sent:
            if until_kind is not None and self.sent[0][1] == until_kind:
                break
            job_id, kind = self.sent.pop(0)
            self.deliver(job_id, kind)
            if twice:
                self.deliver(job_id, kind)
            delivered.append((job_id, kind))
        return delivered


def make_round_env(sqlite_template: Path, tmp: Path, mp: pytest.MonkeyPatch, owner_name: str) -> RoundEnv:
    """A migrated SQLite copy in `tmp`, the settings pointing at it, and `enqueue_job` patched to
    collect what the stages send (`env.sent`); undo with `close_round_env` and the MonkeyPatch."""
    from service.auth import create_owner

    db = tmp / "adaptinf.db"
    shutil.copyfile(sqlite_template, db)
    url = f"sqlite:///{db}"
    for key, value in {"DATA_DIR": str(tmp / "data"), "DATABASE_URL": url, "BROKER_URL": "memory://",
                       "DEVICE": "cpu"}.items():
        mp.setenv(f"ADAPTINF_{key}", value)
    get_settings.cache_clear()
    import workers.rounds.advance as advance

    env = RoundEnv(get_settings(), url, owner_id="")
    mp.setattr(advance, "enqueue_job", lambda _s, job_id, kind, _q: env.sent.append((job_id, kind)) or True)
    with env.factory() as session:
        env.owner_id = create_owner(session, owner_name).id
        session.commit()
    return env


def close_round_env(env: RoundEnv) -> None:
    get_settings.cache_clear()
    get_engine(env.url).dispose()


@pytest.fixture
def round_env(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundEnv]:
    env = make_round_env(sqlite_template, tmp_path, monkeypatch, "rounds")
    yield env
    close_round_env(env)


def add_dataset(env: RoundEnv, name: str, indices: list[int], *, text_every: int = 4) -> str:
    """A ready dataset whose sample k is datagen's sample `indices[k]`; every `text_every`-th is
    text-only. The same index in two datasets gives the same content hash (an exact duplicate)."""
    blobs = env.blobs
    with env.factory() as session:
        ds = Dataset(owner_id=env.owner_id, name=name, status="ready", num_samples=len(indices), file_blob="0" * 64,
                     file_name=f"{name}.json")
        session.add(ds)
        session.flush()
        for pos, i in enumerate(indices):
            refs = [] if i % text_every == 3 else [blobs.put_bytes(datagen.image_bytes(i)).sha256]
            question = datagen._QUESTIONS[i % len(datagen._QUESTIONS)]
            messages = [{"role": "user", "content": "<image>\n" * len(refs) + question},
                        {"role": "assistant", "content": f"{datagen._ANSWERS[i % 4]} (sample {i})"}]
            digest = hashlib.sha256(json.dumps([messages, refs]).encode()).hexdigest()
            session.add(Sample(dataset_id=ds.id, position=pos, key=f"k{pos}", content_hash=digest,
                               record={"id": f"s{i}"}, messages=messages, image_refs=refs,
                               image_names=[f"images/{i}.png"] if refs else []))
        session.commit()
        return ds.id


def add_pool(env: RoundEnv, config: dict | None = None, eval_sets: tuple[tuple[str, str], ...] = ()) -> str:
    from service.pool_config import parse_pool_config
    from service.pools import create_pool

    with env.factory() as session:
        pool = create_pool(session, env.owner_id, name="p", base_model="tiny-llava", model_type="llava",
                           config=parse_pool_config(config or POOL_CONFIG), eval_sets=eval_sets)
        session.commit()
        return pool.id


def start_round(env: RoundEnv, pool_id: str, dataset_ids: list[str], **params) -> tuple[str, str]:
    """Create the round as the API does (contract §2) and send its parent job; returns (round id, job id)."""
    from service.db.models import Pool
    from service.pool_config import RoundParams
    from service.rounds import create_round

    body = RoundParams(dataset_ids=dataset_ids, **{"budget": 8, **params})
    with env.factory() as session:
        rnd, job = create_round(session, session.get(Pool, pool_id), body)
        session.commit()
    env.sent.append((job.id, "round"))
    return rnd.id, job.id
