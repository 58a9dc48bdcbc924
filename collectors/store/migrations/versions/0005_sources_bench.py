"""Where a series' samples came from (`metric_series.source`: NULL measured, `replay:<set>`
for a replayed GPU), and stored benchmark results (`bench_results`: the demo's replay of
real Claude Code traces, KV-aware against round-robin).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # a nullable column: a plain ALTER TABLE ADD COLUMN on SQLite too, no table copy
    op.add_column("metric_series", sa.Column("source", sa.String(length=64), nullable=True))
    op.create_table(
        "bench_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bench_results")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_bench_results_kind_created_at"), "bench_results", ["kind", "created_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_bench_results_kind_created_at"), table_name="bench_results")
    op.drop_table("bench_results")
    with op.batch_alter_table("metric_series") as batch:
        batch.drop_column("source")
