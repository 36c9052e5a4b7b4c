"""Responses remembered per Idempotency-Key.

Revision ID: 0002_idempotency_keys
Revises: 0001_events
Create Date: 2026-11-23
"""

from alembic import op

revision = "0002_idempotency_keys"
down_revision = "0001_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            actor        text        NOT NULL,
            key          text        NOT NULL,
            fingerprint  text        NOT NULL,
            status       integer     NOT NULL,
            headers      jsonb       NOT NULL,
            body         bytea       NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (actor, key)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE idempotency_keys")
