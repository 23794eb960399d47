"""Idempotent submission and unique jobs.

- idempotency_keys: one row per (scope, key), written in the transaction that creates the
  job, so two retries racing on two web processes still create one job (the primary key
  decides); pruned by the scheduler once expired.
- jobs.unique_key / jobs.unique_states and the partial unique index ix_jobs_unique_key:
  a unique job holds its slot while its status is one of its unique_states (a bitmask).

Both dialects add the nullable columns in place (no table rewrite), and the downgrade drops
them with ALTER TABLE ... DROP COLUMN (SQLite >= 3.35), so no batch copy of jobs is made.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# STATUS_BITS of quorra.jobs as they were at this revision (never renumbered).
UNIQUE_SLOT_HELD = (
    "unique_key IS NOT NULL AND (unique_states & CASE status WHEN 'pending' THEN 1 WHEN 'leased' THEN 2"
    " WHEN 'processing' THEN 4 WHEN 'succeeded' THEN 8 WHEN 'failed' THEN 16 WHEN 'dead' THEN 32"
    " WHEN 'cancelled' THEN 64 ELSE 0 END) <> 0"
)


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("scope", sa.String(64), server_default=sa.text("''"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])
    op.create_index("ix_idempotency_keys_job_id", "idempotency_keys", ["job_id"])
    op.add_column("jobs", sa.Column("unique_key", sa.String(64), nullable=True))
    op.add_column("jobs", sa.Column("unique_states", sa.SmallInteger(), nullable=True))
    op.create_index(
        "ix_jobs_unique_key",
        "jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(UNIQUE_SLOT_HELD),
        sqlite_where=sa.text(UNIQUE_SLOT_HELD),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_unique_key", table_name="jobs")
    op.execute("ALTER TABLE jobs DROP COLUMN unique_states")
    op.execute("ALTER TABLE jobs DROP COLUMN unique_key")
    op.drop_table("idempotency_keys")
