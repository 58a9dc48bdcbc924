"""Events (de-duplicated Xids, failed checks), incremental-read cursors, diagnostic reports.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_events_node_kind_key_last_at"), "events", ["node", "kind", "key", "last_at"]
    )
    op.create_index(op.f("ix_events_last_at"), "events", ["last_at"])
    op.create_table(
        "cursors",
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node", "source", name=op.f("pk_cursors")),
    )
    op.create_table(
        "diag_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["runs.id"],
            name=op.f("fk_diag_reports_run_id_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_diag_reports")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_diag_reports_node_kind_created_at"),
        "diag_reports",
        ["node", "kind", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_diag_reports_node_kind_created_at"), table_name="diag_reports")
    op.drop_table("diag_reports")
    op.drop_table("cursors")
    op.drop_index(op.f("ix_events_last_at"), table_name="events")
    op.drop_index(op.f("ix_events_node_kind_key_last_at"), table_name="events")
    op.drop_table("events")
