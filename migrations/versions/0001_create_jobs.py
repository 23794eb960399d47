"""Create the jobs table and its indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import Document, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "'cancelled', 'dead', 'failed', 'leased', 'pending', 'processing', 'succeeded'"
READY = "status IN ('failed', 'pending')"
HOLDING = "status IN ('leased', 'processing')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("payload", Document, nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column("lease_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("leased_by", sa.String(200), nullable=True),
        sa.Column("leased_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", Document, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_jobs_status")),
        sa.CheckConstraint("attempts >= 0 AND max_retries >= 0", name=op.f("ck_jobs_counts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(
        "ix_jobs_ready",
        "jobs",
        ["queue", sa.text("priority DESC"), "run_at", "id"],
        postgresql_where=sa.text(READY),
        sqlite_where=sa.text(READY),
    )
    op.create_index(
        "ix_jobs_lease_expiry",
        "jobs",
        ["lease_expires_at"],
        postgresql_where=sa.text(HOLDING),
        sqlite_where=sa.text(HOLDING),
    )
    op.create_index("ix_jobs_created", "jobs", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("ix_jobs_queue_status", "jobs", ["queue", "status"])
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text("finished_at IS NOT NULL"),
        sqlite_where=sa.text("finished_at IS NOT NULL"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # A queue table churns: keep free space on each page for HOT updates and vacuum early.
        op.execute(
            "ALTER TABLE jobs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,"
            " autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0)"
        )


def downgrade() -> None:
    op.drop_table("jobs")
