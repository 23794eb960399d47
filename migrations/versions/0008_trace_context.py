"""OpenTelemetry: the W3C trace context a job was submitted in.

jobs.traceparent and jobs.tracestate: the `traceparent` (version 00, 55 characters) and
`tracestate` of the submit, NULL for a job submitted outside any trace. The worker runs the
handler in a span related to it (README, "Tracing").

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns without defaults: PostgreSQL adds them without rewriting the table.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("traceparent", sa.String(55), nullable=True))
        batch.add_column(sa.Column("tracestate", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("tracestate")
        batch.drop_column("traceparent")
