"""Rate and concurrency limits (issue 14 §4): a queue's limits and its rate's token bucket
on the queues table, and a tenants table for a tenant's limits over all its queues. No index:
a limited lease counts the jobs in flight through those there are (an index of their own
would cost every lease, limited or not, 30 % more buffers in the lease statement).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _limit_columns() -> list[sa.Column]:
    return [
        sa.Column("max_in_flight", sa.Integer()),
        sa.Column("rate_limit", sa.Integer()),
        sa.Column("rate_period_seconds", sa.Integer()),
        sa.Column("rate_tokens", sa.Float()),
        sa.Column("rate_refilled_at", UTCDateTime()),
    ]


def upgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        for column in _limit_columns():
            batch.add_column(column)
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(100), nullable=False),
        *_limit_columns(),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_tenants")),
    )


def downgrade() -> None:
    op.drop_table("tenants")
    with op.batch_alter_table("queues") as batch:
        for column in reversed(_limit_columns()):
            batch.drop_column(column.name)
