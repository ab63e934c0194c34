"""The data model (DESIGN §4): SQLAlchemy 2.0 typed ORM, portable across PostgreSQL and SQLite.

String ids carry a type prefix (``ds_``, ``pool_``, ``job_`` ...) as the fine-tuning APIs users know
do; samples use integer ids because the FAISS pool index is keyed by them.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# Named constraints let later Alembic migrations alter tables on SQLite (batch mode needs names).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


#: What a round's stages store as blobs (round_blobs.kind): prepare's candidate plan, the warm-up
#: and trained adapters (before finalize gives them checkpoint rows), select's pruning decision,
#: the dashboard's cluster view, and the pool's FAISS index version.
ROUND_BLOB_KINDS = ("candidates", "warmup_adapter", "decision", "cluster_view", "index", "adapter")

# BigInteger autoincrement is not an alias of ROWID on SQLite; this variant keeps both happy.
BigIntPK = BigInteger().with_variant(Integer, "sqlite")


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("own"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown in listings; never the secret
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the whole key
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    owner: Mapped[Owner] = relationship()


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ds"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ready|failed
    num_samples: Mapped[int] = mapped_column(default=0)
    num_images: Mapped[int] = mapped_column(default=0)
    # sha256 of the uploaded records file; for a dataset by reference, of its {uri, images_uri, format} manifest
    file_blob: Mapped[str] = mapped_column(String(64))
    file_name: Mapped[str] = mapped_column(String(300))
    archive_blob: Mapped[str | None] = mapped_column(String(64))
    archive_name: Mapped[str | None] = mapped_column(String(300))
    skill: Mapped[str | None] = mapped_column(String(100))  # declared for every sample (a record's own wins)
    skill_counts: Mapped[dict[str, Any] | None]  # {skill: samples}, written at ingest
    error: Mapped[dict[str, Any] | None]
    job_id: Mapped[str | None] = mapped_column(String(40))  # the ingest job, shown with the dataset
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("dataset_id", "key"), Index("ix_samples_content_hash", "content_hash"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]  # 0-based order in the uploaded file
    key: Mapped[str] = mapped_column(String(300))  # the user's sample id
    content_hash: Mapped[str] = mapped_column(String(64))
    record: Mapped[dict[str, Any]]  # the original record, returned in downloads
    messages: Mapped[list[Any]]  # normalised [{role, content}] (core.samples.Message)
    image_refs: Mapped[list[Any]]  # blob sha256 of each image, in placeholder order
    image_names: Mapped[list[Any]]  # the names the record uses for them
    skill: Mapped[str | None] = mapped_column(String(100))  # the record's `skill`, else the dataset's


class Pool(Base):
    __tablename__ = "pools"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("pool"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str] = mapped_column(String(500))
    model_type: Mapped[str] = mapped_column(String(32))  # llava|causal-lm
    config: Mapped[dict[str, Any]]  # lora, features, selection, pruning, training
    rounds_completed: Mapped[int] = mapped_column(default=0)
    current_checkpoint_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PoolMember(Base):
    __tablename__ = "pool_members"
    __table_args__ = (Index("ix_pool_members_pool_status", "pool_id", "status"),)
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|pruned
    joined_round: Mapped[int]
    pruned_round: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(String(64))
    cluster: Mapped[int | None]


class PoolEvalSet(Base):
    """A held-out dataset the pool's checkpoints are scored on, tagged with a skill (DESIGN §7)."""

    __tablename__ = "pool_eval_sets"
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    skill: Mapped[str] = mapped_column(String(100))


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("pool_id", "number"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("round"))
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]  # 1-based
    status: Mapped[str] = mapped_column(String(16), default="queued")
    params: Mapped[dict[str, Any]]  # dataset_ids, budget, method, train, prune, seed
    result: Mapped[dict[str, Any] | None]  # per-cluster stats, counts, training stats
    job_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # read-only: the API shows the round with its job (no foreign key: a job row may be swept first)
    job: Mapped[Job | None] = relationship(primaryjoin="foreign(Round.job_id) == Job.id", viewonly=True)


class Selection(Base):
    __tablename__ = "selections"
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    cluster: Mapped[int]
    expert: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Float)
    stratum: Mapped[int | None]


class Score(Base):
    __tablename__ = "scores"
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id"), primary_key=True)
    ppl: Mapped[float | None] = mapped_column(Float)
    el2n: Mapped[float | None] = mapped_column(Float)
    entropy: Mapped[float | None] = mapped_column(Float)
    grand: Mapped[float | None] = mapped_column(Float)
    ig: Mapped[float | None] = mapped_column(Float)


class FeatureShard(Base):
    __tablename__ = "feature_shards"
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done
    blob: Mapped[str | None] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(default=0)
    first_sample_id: Mapped[int | None] = mapped_column(BigInteger)
    last_sample_id: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[datetime | None]


class RoundBlob(Base):
    """A blob one of the round's stages stored, by kind: the typed reference that keeps it from the
    garbage collector while the round exists (deleting the round, or its pool, lets it go).

    A table rather than one column per kind on `rounds`: each stage adds its row in the
    transaction that records its completion without touching the rounds row (which finalize and
    the API lock and update), gc reads one column for all of them, and a new kind is a value of
    the check constraint, not a new column.
    """

    __tablename__ = "round_blobs"
    __table_args__ = (CheckConstraint(f"kind IN ({', '.join(repr(k) for k in ROUND_BLOB_KINDS)})", name="kind"),)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    blob: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IndexVersion(Base):
    """A pool's FAISS index of one round (pool config `pool_index`): a blob, verified when served
    and rebuilt from the round's feature shards when it fails its sha256."""

    __tablename__ = "index_versions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("idx"))
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[str] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    blob: Mapped[str] = mapped_column(String(64))  # the FAISS file in the blob store
    sha256: Mapped[str] = mapped_column(String(64))  # what the file must hash to (= blob: content-addressed)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    ntotal: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))  # flat|ivf
    dim: Mapped[int | None]  # vector width; null for versions written before it was recorded
    rebuild_job_id: Mapped[str | None] = mapped_column(String(40))  # the latest rebuild job, if any
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ckpt"))
    pool_id: Mapped[str] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"), index=True)
    round_id: Mapped[str | None] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default="round")  # warmup|round
    blob: Mapped[str] = mapped_column(String(64))  # tar.gz of the PEFT adapter directory
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any] | None]  # training loss, steps ...
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # read-only, for the API's view of a checkpoint
    round: Mapped[Round | None] = relationship(viewonly=True)
    evals: Mapped[list[EvalResult]] = relationship(viewonly=True, order_by="(EvalResult.skill, EvalResult.dataset_id)")


class EvalResult(Base):
    __tablename__ = "eval_results"
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    skill: Mapped[str] = mapped_column(String(100))
    metrics: Mapped[dict[str, Any]]  # loss, accuracy, n


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_lease", "status", "lease_expires_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # ingest|round|round.<stage>
    queue: Mapped[str] = mapped_column(String(32))
    # Stages and feature shards of a round run as child jobs: each has its own lease and attempts,
    # so a lost worker costs one shard, and a parent waiting on its children holds no lease.
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(64))
    progress_done: Mapped[int] = mapped_column(default=0)
    progress_total: Mapped[int] = mapped_column(default=0)
    # Live progress (core.progress): the unit counted, units per second and seconds left in this
    # stage, the stage's fraction when it is not done/total, the latest live numbers, the stage log.
    progress_unit: Mapped[str | None] = mapped_column(String(32))
    progress_rate: Mapped[float | None] = mapped_column(Float)
    progress_eta: Mapped[float | None] = mapped_column(Float)
    progress_fraction: Mapped[float | None] = mapped_column(Float)
    metrics: Mapped[dict[str, Any] | None]
    stages: Mapped[list[Any] | None]
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]  # {code, message}
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobEvent(Base):
    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None]


class IdempotencyRecord(Base):
    """The first response to a creating POST, replayed for a repeated Idempotency-Key."""

    __tablename__ = "idempotency_keys"
    owner_id: Mapped[str] = mapped_column(ForeignKey("owners.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    route: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    body: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
