"""What the dashboard needs from the database (issue 10).

queues: what an operator set on a queue (paused or not), read by every lease.
job_attempts: one row per attempt that ended, written with the settle, reap or cancel.
workers: each worker the gRPC servers saw lately (upserted every few seconds at most).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import Document, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("queues", Document, nullable=True),
        sa.Column("handlers", Document, nullable=True),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index("ix_workers_last_seen_at", "workers", ["last_seen_at"])
    op.create_table(
        "job_attempts",
        sa.Column("lease_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("worker_id", sa.String(200), nullable=True),
        sa.Column("leased_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('cancelled', 'expired', 'failed', 'succeeded')", name=op.f("ck_job_attempts_outcome")
        ),
        sa.PrimaryKeyConstraint("lease_id", name=op.f("pk_job_attempts")),
    )
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id"])
    op.create_index("ix_job_attempts_finished", "job_attempts", ["finished_at", "queue", "outcome"])
    op.create_table(
        "queues",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("is_paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("paused_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queues")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("job_attempts")
    op.drop_table("queues")
