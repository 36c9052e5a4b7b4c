"""(source, id) of every ingested CloudEvent, unique across the whole log.

The event id derived from (source, id) is unique only within a deal's stream; this table makes
it unique everywhere, written in the same transaction as the event, so two deliveries of one
CloudEvent naming different deals can never both be stored.

Revision ID: 0007_cloudevent_ids
Revises: 0006_insights
Create Date: 2026-11-23
"""

from alembic import op

revision = "0007_cloudevent_ids"
down_revision = "0006_insights"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE cloudevent_ids (
            event_id   uuid PRIMARY KEY,
            stream_id  uuid   NOT NULL,
            position   bigint NOT NULL
        )
        """
    )
    # Earlier deliveries: the first stored copy of each keeps the claim.
    op.execute(
        """
        INSERT INTO cloudevent_ids (event_id, stream_id, position)
        SELECT DISTINCT ON (event_id) event_id, stream_id, position
        FROM events WHERE metadata ? 'cloudevent'
        ORDER BY event_id, position
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE cloudevent_ids")
