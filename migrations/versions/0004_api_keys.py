"""API keys: bearer tokens with one role each, stored as hashes only.

Revision ID: 0004_api_keys
Revises: 0003_projections
Create Date: 2026-11-23
"""

from alembic import op

revision = "0004_api_keys"
down_revision = "0003_projections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tokens are 256 random bits, so a plain SHA-256 is a safe and fast lookup key; a slow
    # password hash would only matter for guessable secrets.
    op.execute(
        """
        CREATE TABLE api_keys (
            seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            key_id      uuid PRIMARY KEY,
            name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            role        text        NOT NULL
                CHECK (role IN ('ingest', 'rep', 'manager', 'auditor', 'admin')),
            token_hash  bytea       NOT NULL UNIQUE,
            hint        text        NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            created_by  text,
            revoked_at  timestamptz
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE api_keys")
