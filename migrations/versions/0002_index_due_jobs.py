"""Index waiting jobs by run_at, for the scheduler's wake-ups.

The scheduler asks every tick which queues hold a waiting job whose run_at passed since
the previous tick (Store.queues_due_between). Without this index that question reads every
waiting job: 1.5 s a tick at a million of them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

WAITING = "status IN ('failed', 'pending')"


def upgrade() -> None:
    op.create_index(
        "ix_jobs_due",
        "jobs",
        ["run_at"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_due", table_name="jobs")
