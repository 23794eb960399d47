"""Tenants (issue 14): every job, workflow, schedule, webhook, queue setting, attempt and
worker belongs to one; "default" for all that exists, so a deployment that never names a
tenant sees no change.

The column has a constant default, so PostgreSQL adds it without rewriting the table. The
lease index gains the tenant after the queue (a lease for one tenant is an index prefix; a
lease for every tenant skips from tenant to tenant within the queue). A queue's settings
and a schedule's name are now unique within their tenant.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

READY = "status IN ('failed', 'pending')"
TABLES = ("jobs", "workflows", "schedules", "job_attempts", "workers", "webhooks")


def _tenant_column() -> sa.Column:
    return sa.Column("tenant", sa.String(100), server_default=sa.text("'default'"), nullable=False)


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_tenant_column())
    op.drop_index("ix_jobs_ready", table_name="jobs")
    _ready_index(["queue", "tenant", sa.text("priority DESC"), "run_at", "id"])
    op.drop_index("ix_job_attempts_finished", table_name="job_attempts")
    op.create_index("ix_job_attempts_finished", "job_attempts", ["finished_at", "tenant", "queue", "outcome"])
    with op.batch_alter_table("schedules") as batch:
        batch.drop_constraint("uq_schedules_name", type_="unique")
        batch.create_unique_constraint(batch.f("uq_schedules_tenant_name"), ["tenant", "name"])
    with op.batch_alter_table("queues") as batch:
        batch.add_column(_tenant_column())
        batch.drop_constraint("pk_queues", type_="primary")
        batch.create_primary_key("pk_queues", ["tenant", "name"])


def downgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.drop_constraint("pk_queues", type_="primary")
        batch.create_primary_key("pk_queues", ["name"])
        batch.drop_column("tenant")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_constraint("uq_schedules_tenant_name", type_="unique")
        batch.create_unique_constraint(batch.f("uq_schedules_name"), ["name"])
    op.drop_index("ix_job_attempts_finished", table_name="job_attempts")
    op.create_index("ix_job_attempts_finished", "job_attempts", ["finished_at", "queue", "outcome"])
    op.drop_index("ix_jobs_ready", table_name="jobs")
    _ready_index(["queue", sa.text("priority DESC"), "run_at", "id"])
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tenant")


def _ready_index(columns: list) -> None:
    op.create_index("ix_jobs_ready", "jobs", columns, postgresql_where=sa.text(READY), sqlite_where=sa.text(READY))
