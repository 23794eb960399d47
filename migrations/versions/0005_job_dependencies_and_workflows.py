"""Job dependencies and workflows.

- jobs: workflow_id, ref, on_parent_failure, pending_parents, has_dependants (NOT NULL
  DEFAULT false: PostgreSQL 11+ adds it without a rewrite), cancelled_by_parent; the status
  'blocked' joins the status CHECK; the unique slot index learns blocked's bit (128).
- job_dependencies: the edges (job_id waits for parent_id), indexed both ways.
- workflows: one row per POST /v1/workflows, completed once by the transaction that
  finished its last job.

SQLite cannot alter a CHECK constraint: batch mode copies the jobs table once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATUSES = (
    "cancelled",
    "dead",
    "failed",
    "leased",
    "pending",
    "processing",
    "succeeded",
)
_BITS = (
    "WHEN 'pending' THEN 1 WHEN 'leased' THEN 2 WHEN 'processing' THEN 4 WHEN 'succeeded' THEN 8"
    " WHEN 'failed' THEN 16 WHEN 'dead' THEN 32 WHEN 'cancelled' THEN 64"
)
UNIQUE_SLOT_HELD_BEFORE = f"unique_key IS NOT NULL AND (unique_states & CASE status {_BITS} ELSE 0 END) <> 0"
UNIQUE_SLOT_HELD = (
    f"unique_key IS NOT NULL AND (unique_states & CASE status {_BITS} WHEN 'blocked' THEN 128 ELSE 0 END) <> 0"
)


def _status_check(statuses) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in sorted(statuses)))


def _unique_index(where: str) -> None:
    op.create_index(
        "ix_jobs_unique_key",
        "jobs",
        ["unique_key"],
        unique=True,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index("ix_jobs_unique_key", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("workflow_id", sa.Uuid(as_uuid=False), nullable=True))
        batch.add_column(sa.Column("ref", sa.String(100), nullable=True))
        batch.add_column(sa.Column("on_parent_failure", sa.String(8), nullable=True))
        batch.add_column(sa.Column("pending_parents", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column(
                "has_dependants",
                sa.Boolean(),
                server_default=sa.text("false"),
                nullable=False,
            )
        )
        batch.add_column(sa.Column("cancelled_by_parent", sa.Uuid(as_uuid=False), nullable=True))
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint("status", _status_check((*STATUSES, "blocked")))
    _unique_index(UNIQUE_SLOT_HELD)
    op.create_index(
        "ix_jobs_workflow_id",
        "jobs",
        ["workflow_id"],
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
        sqlite_where=sa.text("workflow_id IS NOT NULL"),
    )
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("parent_id", sa.Uuid(as_uuid=False), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "parent_id", name=op.f("pk_job_dependencies")),
    )
    op.create_index("ix_job_dependencies_parent_id", "job_dependencies", ["parent_id", "job_id"])
    op.create_table(
        "workflows",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('cancelled', 'failed', 'running', 'succeeded')",
            name=op.f("ck_workflows_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )


def downgrade() -> None:
    op.drop_table("workflows")
    op.drop_table("job_dependencies")
    op.drop_index("ix_jobs_workflow_id", table_name="jobs")
    op.drop_index("ix_jobs_unique_key", table_name="jobs")
    # Jobs that were waiting for parents wait for nothing once the edges are gone.
    op.execute("UPDATE jobs SET status = 'pending' WHERE status = 'blocked'")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_status"), type_="check")
        batch.create_check_constraint("status", _status_check(STATUSES))
        for name in (
            "cancelled_by_parent",
            "has_dependants",
            "pending_parents",
            "on_parent_failure",
            "ref",
        ):
            batch.drop_column(name)
        batch.drop_column("workflow_id")
    _unique_index(UNIQUE_SLOT_HELD_BEFORE)
