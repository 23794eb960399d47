"""Per-job execution timeouts and cron schedules.

jobs.timeout_seconds: how long the worker lets one attempt run (NULL: no limit).
jobs.schedule_id and jobs.scheduled_for: the schedule tick a job was submitted for, unique,
so a tick fired twice (a leader replaced mid-tick) cannot make two jobs.
schedules: jobs submitted on a cron expression or an interval, fired by the scheduler leader.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import Document, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: PostgreSQL adds them without rewriting the table.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("timeout_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("schedule_id", sa.Uuid(as_uuid=False), nullable=True))
        batch.add_column(sa.Column("scheduled_for", UTCDateTime(), nullable=True))
    op.create_index("ix_jobs_schedule_tick", "jobs", ["schedule_id", "scheduled_for"], unique=True)
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column("job_type", sa.String(200), nullable=False),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("payload", Document, nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=True),
        sa.Column("missed_ticks", sa.String(16), server_default=sa.text("'skip'"), nullable=False),
        sa.Column("is_paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("next_run_at", UTCDateTime(), nullable=False),
        sa.Column("last_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_job_id", sa.Uuid(as_uuid=False), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("(cron IS NULL) <> (interval_seconds IS NULL)", name=op.f("ck_schedules_timing")),
        sa.CheckConstraint("missed_ticks IN ('catch_up', 'skip')", name=op.f("ck_schedules_missed_ticks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_index(
        "ix_schedules_due",
        "schedules",
        ["next_run_at"],
        postgresql_where=sa.text("NOT is_paused"),
        sqlite_where=sa.text("NOT is_paused"),
    )


def downgrade() -> None:
    op.drop_table("schedules")
    op.drop_index("ix_jobs_schedule_tick", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("scheduled_for")
        batch.drop_column("schedule_id")
        batch.drop_column("timeout_seconds")
