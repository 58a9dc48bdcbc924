"""Telemetry time series: series, raw samples, 1-minute/1-hour rollups and rollup watermarks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metric_series")),
        sa.UniqueConstraint("node", "key", name=op.f("uq_metric_series_node_key")),
    )
    op.create_table(
        "metric_samples",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name=op.f("fk_metric_samples_series_id_metric_series"),
        ),
        sa.PrimaryKeyConstraint("series_id", "ts", name=op.f("pk_metric_samples")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "metric_rollups",
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_other", sa.Integer(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=True),
        sa.Column("vmax", sa.Float(), nullable=True),
        sa.Column("vavg", sa.Float(), nullable=True),
        sa.Column("vlast", sa.Float(), nullable=True),
        sa.Column("last_status", sa.SmallInteger(), nullable=False),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name=op.f("fk_metric_rollups_series_id_metric_series"),
        ),
        sa.PrimaryKeyConstraint(
            "resolution_s", "series_id", "bucket", name=op.f("pk_metric_rollups")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "metric_rollup_state",
        sa.Column("resolution_s", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("done_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution_s", name=op.f("pk_metric_rollup_state")),
    )


def downgrade() -> None:
    op.drop_table("metric_rollup_state")
    op.drop_table("metric_rollups")
    op.drop_table("metric_samples")
    op.drop_table("metric_series")
