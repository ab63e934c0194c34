"""Skills: a dataset may declare one for all its samples, a record its own (DESIGN §5, §7).

`datasets.skill` is the declared default, `datasets.skill_counts` the samples per skill written
at ingest (so a round's arriving skills are read without scanning samples), `samples.skill` the
sample's own skill or the dataset's. Evaluation-set skills are trimmed: skills now compare stripped.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 03:10:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("skill", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("skill_counts", sa.JSON(), nullable=True))
    with op.batch_alter_table("samples") as batch:
        batch.add_column(sa.Column("skill", sa.String(length=100), nullable=True))
    # Skills are compared stripped from now on; evaluation-set skills were stored as sent.
    op.execute("UPDATE pool_eval_sets SET skill = TRIM(skill) WHERE skill <> TRIM(skill)")


def downgrade() -> None:
    with op.batch_alter_table("samples") as batch:
        batch.drop_column("skill")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("skill_counts")
        batch.drop_column("skill")
