"""Typed blob references: round_blobs, and index versions as blobs.

Every blob the service keeps is now named by a typed column, so the garbage collector reads
columns instead of scanning JSON for 64-hex strings:
- `round_blobs(round_id, kind, blob)`: what a round's stages store (candidate plan, adapters
  before finalize, pruning decision, cluster view, index version). Backfilled from the round jobs'
  state (jobs.result) and the select stages' results, where the service kept them until now.
- `index_versions.blob` replaces `path`: index versions live in the blob store. A version written
  before this migration has its file outside the store, so its `blob` is its recorded sha256 and
  is missing from the store: the first download finds it missing and rebuilds it from the round's
  feature shards (the old `indexes/` folder under the data directory can be deleted). `dim` comes
  from the pool's `features.proj_dim` where the config names it; `rebuild_job_id` starts empty.

Downgrade drops round_blobs (the round jobs' JSON still names those blobs, which the older
collector scans) and gives `path` back as `blob:<sha256>`: the file is in the blob store now.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 18:00:00
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ("candidates", "warmup_adapter", "decision", "cluster_view", "index", "adapter")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("kind", sa.String), sa.column("status", sa.String),
                sa.column("parent_id", sa.String), sa.column("params", sa.JSON), sa.column("result", sa.JSON),
                sa.column("created_at", sa.DateTime(timezone=True)))
rounds = sa.table("rounds", sa.column("id", sa.String), sa.column("pool_id", sa.String))
pools = sa.table("pools", sa.column("id", sa.String), sa.column("config", sa.JSON))
index_versions = sa.table("index_versions", sa.column("id", sa.String), sa.column("pool_id", sa.String),
                          sa.column("sha256", sa.String), sa.column("blob", sa.String), sa.column("path", sa.String),
                          sa.column("dim", sa.Integer))


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and _HEX64.match(value) else None


def _state_refs(state: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(kind, sha) of the blobs a round job's state names (what the stages wrote into it)."""
    yield "candidates", _sha(state.get("candidates_blob"))
    yield "decision", _sha(state.get("decision_blob"))
    for kind, key in (("warmup_adapter", "warmup_checkpoint"), ("adapter", "checkpoint")):
        record = state.get(key)
        yield kind, _sha(record.get("blob")) if isinstance(record, dict) else None


def _backfill_round_blobs(conn: sa.Connection, table: sa.Table) -> None:
    known = set(conn.scalars(sa.select(rounds.c.id)))
    found: dict[tuple[str, str], str] = {}
    round_of_job: dict[str, str] = {}
    for job_id, params, result in conn.execute(
            sa.select(jobs.c.id, jobs.c.params, jobs.c.result).where(jobs.c.kind == "round")):
        round_id = (params or {}).get("round_id") if isinstance(params, dict) else None
        if round_id not in known:
            continue
        round_of_job[job_id] = round_id
        for kind, sha in _state_refs(result if isinstance(result, dict) else {}):
            if sha:
                found[(round_id, kind)] = sha
    for parent_id, result in conn.execute(
            sa.select(jobs.c.parent_id, jobs.c.result)
            .where(jobs.c.kind == "round.select", jobs.c.status == "succeeded").order_by(jobs.c.created_at)):
        sha = _sha(result.get("cluster_view_blob")) if isinstance(result, dict) else None
        if sha and parent_id in round_of_job:
            found[(round_of_job[parent_id], "cluster_view")] = sha
    if found:
        now = datetime.now(timezone.utc)
        op.bulk_insert(table, [{"round_id": r, "kind": k, "blob": sha, "created_at": now}
                               for (r, k), sha in sorted(found.items())])


def _backfill_index_dims(conn: sa.Connection) -> None:
    configs = dict(conn.execute(sa.select(pools.c.id, pools.c.config)).all())
    for version_id, pool_id in conn.execute(sa.select(index_versions.c.id, index_versions.c.pool_id)).all():
        features = (configs.get(pool_id) or {}).get("features") or {}
        dim = features.get("proj_dim") if isinstance(features, dict) else None
        if isinstance(dim, int) and not isinstance(dim, bool):
            conn.execute(sa.update(index_versions).where(index_versions.c.id == version_id).values(dim=dim))


def upgrade() -> None:
    table = op.create_table(
        "round_blobs",
        sa.Column("round_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("blob", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"kind IN ({', '.join(repr(k) for k in KINDS)})", name=op.f("ck_round_blobs_kind")),
        sa.ForeignKeyConstraint(["round_id"], ["rounds.id"], name=op.f("fk_round_blobs_round_id_rounds"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("round_id", "kind", name=op.f("pk_round_blobs")),
    )
    conn = op.get_bind()
    _backfill_round_blobs(conn, table)

    with op.batch_alter_table("index_versions") as batch:
        batch.add_column(sa.Column("blob", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("dim", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rebuild_job_id", sa.String(length=40), nullable=True))
    conn.execute(sa.update(index_versions).values(blob=index_versions.c.sha256))
    _backfill_index_dims(conn)
    with op.batch_alter_table("index_versions") as batch:
        batch.alter_column("blob", existing_type=sa.String(length=64), nullable=False)
        batch.drop_column("path")


def downgrade() -> None:
    with op.batch_alter_table("index_versions") as batch:
        batch.add_column(sa.Column("path", sa.String(length=1000), nullable=True))
    conn = op.get_bind()
    conn.execute(sa.update(index_versions).values(path=sa.literal("blob:") + index_versions.c.blob))
    with op.batch_alter_table("index_versions") as batch:
        batch.alter_column("path", existing_type=sa.String(length=1000), nullable=False)
        batch.drop_column("rebuild_job_id")
        batch.drop_column("dim")
        batch.drop_column("blob")
    op.drop_table("round_blobs")
