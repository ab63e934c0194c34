"""Live job progress: unit, rate, ETA and stage fraction, the latest metrics, the stage log.

All nullable: jobs written before (and job kinds that report none of it) read as null.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 09:00:00
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("progress_unit", sa.String(length=32)),
    ("progress_rate", sa.Float()),
    ("progress_eta", sa.Float()),
    ("progress_fraction", sa.Float()),
    ("metrics", sa.JSON()),
    ("stages", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
