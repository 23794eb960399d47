"""Tenant isolation of jobs (issue 14): every list and count of jobs is one tenant's, so the
listing indexes lead with the tenant (a small tenant's newest jobs are an index range, not
a walk past a big tenant's); a worker id is named within its tenant (two tenants' workers
called "w1" are two rows).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_created", table_name="jobs")
    op.drop_index("ix_jobs_queue_status", table_name="jobs")
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("ix_jobs_tenant_queue_status", "jobs", ["tenant", "queue", "status"])
    with op.batch_alter_table("workers") as batch:
        batch.drop_constraint("pk_workers", type_="primary")
        batch.create_primary_key("pk_workers", ["tenant", "id"])


def downgrade() -> None:
    # Workers of two tenants may share an id by now: keep the most recently seen of each id.
    op.execute(
        "DELETE FROM workers WHERE EXISTS (SELECT 1 FROM workers AS later WHERE later.id = workers.id"
        " AND (later.last_seen_at > workers.last_seen_at"
        " OR (later.last_seen_at = workers.last_seen_at AND later.tenant > workers.tenant)))"
    )
    with op.batch_alter_table("workers") as batch:
        batch.drop_constraint("pk_workers", type_="primary")
        batch.create_primary_key("pk_workers", ["id"])
    op.drop_index("ix_jobs_tenant_queue_status", table_name="jobs")
    op.drop_index("ix_jobs_tenant_created", table_name="jobs")
    op.create_index("ix_jobs_queue_status", "jobs", ["queue", "status"])
    op.create_index("ix_jobs_created", "jobs", [sa.text("created_at DESC"), sa.text("id DESC")])
