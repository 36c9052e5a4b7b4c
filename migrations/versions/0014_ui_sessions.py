"""Sign-in sessions of the web pages: a cookie's hash, the key behind it, when it ends.

Revision ID: 0014_ui_sessions
Revises: 0013_sales_targets
Create Date: 2026-11-24
"""

from alembic import op

revision = "0014_ui_sessions"
down_revision = "0013_sales_targets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Only the token's hash is kept; the key's revocation ends its sessions (joined on read).
    op.execute(
        """
        CREATE TABLE ui_sessions (
            token_hash  bytea       PRIMARY KEY,
            key_id      uuid        NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
            created_at  timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE ui_sessions")
