"""Find an event by its id across streams (CloudEvents deduplication).

Not unique: uniqueness stays per stream, (stream_id, event_id), so the table can still be
distributed by stream.

Revision ID: 0005_event_id_index
Revises: 0004_api_keys
Create Date: 2026-11-23
"""

from alembic import op

revision = "0005_event_id_index"
down_revision = "0004_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX events_event_id ON events (event_id)")


def downgrade() -> None:
    op.execute("DROP INDEX events_event_id")
