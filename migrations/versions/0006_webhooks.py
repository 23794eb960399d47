"""Webhooks on job events.

webhooks: the URLs that get signed deliveries of job events, with the events, queues and
types each wants. The deliveries themselves are jobs (queue quorra.webhooks), so they need
no table of their own.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import Document, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", Document, nullable=False),
        sa.Column("queues", Document, nullable=True),
        sa.Column("types", Document, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("10"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )


def downgrade() -> None:
    op.drop_table("webhooks")
