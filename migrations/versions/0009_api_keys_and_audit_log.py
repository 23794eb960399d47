"""Managed API keys with roles, and the audit log.

api_keys: keys created by `quorra keys create` or POST /v1/keys, stored as a keyed hash and
found by their prefix; revoked, never deleted.
audit_log: one row per operator action, written in the action's own transaction.
Both carry a tenant (default 'default'), so tenants land without migrating these tables.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from quorra.schema import Document, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(100), server_default=sa.text("'default'"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(as_uuid=False), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("tenant", sa.String(100), server_default=sa.text("'default'"), nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("actor_name", sa.String(200), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("remote_addr", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("details", Document, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_occurred", "audit_log", [sa.text("occurred_at DESC"), sa.text("id DESC")])
    op.create_index("ix_audit_log_action", "audit_log", ["action", sa.text("occurred_at DESC")])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", sa.text("occurred_at DESC")])
    op.create_index("ix_audit_log_target", "audit_log", ["target", sa.text("occurred_at DESC")])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("api_keys")
