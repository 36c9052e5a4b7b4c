"""Projections stopped by an event they cannot apply: which, where, why (one row each).

Revision ID: 0008_projection_failures
Revises: 0007_cloudevent_ids
Create Date: 2026-11-23
"""

from alembic import op

revision = "0008_projection_failures"
down_revision = "0007_cloudevent_ids"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE projection_failures (
            projection      text PRIMARY KEY,
            position        bigint      NOT NULL,
            transaction_id  xid8        NOT NULL,
            event_id        uuid        NOT NULL,
            event_type      text        NOT NULL,
            error           text        NOT NULL,
            failed_at       timestamptz NOT NULL DEFAULT now(),
            attempts        integer     NOT NULL DEFAULT 1
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE projection_failures")
