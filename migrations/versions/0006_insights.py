"""Insights: velocity flags, the blocker log, and why deals left a stage.

stage_intervals gains columns its projection fills, so the migration empties it and rewinds
its checkpoint: the running projector replays it from the log.

Revision ID: 0006_insights
Revises: 0005_event_id_index
Create Date: 2026-11-23
"""

from alembic import op

revision = "0006_insights"
down_revision = "0005_event_id_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("TRUNCATE stage_intervals")
    op.execute(
        "UPDATE projection_checkpoints SET transaction_id = '0', position = 0"
        " WHERE name = 'stage_intervals'"
    )
    op.execute("ALTER TABLE stage_intervals ADD COLUMN left_reason text")
    op.execute("ALTER TABLE stage_intervals ADD COLUMN left_override_by text")
    op.execute("ALTER TABLE stage_intervals ADD COLUMN owner text")
    op.execute("ALTER TABLE stage_intervals ADD COLUMN amount numeric")
    op.execute("ALTER TABLE stage_intervals ADD COLUMN pipeline text")
    op.execute(
        """
        CREATE TABLE flag_subjects (
            deal_id           uuid PRIMARY KEY,
            owner             text        NOT NULL,
            stage             text        NOT NULL,
            status            text        NOT NULL,
            last_recorded_at  timestamptz NOT NULL,
            subject           jsonb       NOT NULL
        )
        """
    )
    op.execute(
        """
        CREATE TABLE deal_flags (
            deal_id       uuid        NOT NULL,
            kind          text        NOT NULL,
            raised_at     timestamptz NOT NULL,
            cleared_at    timestamptz,
            severity      text        NOT NULL,
            numbers       jsonb       NOT NULL,
            evaluated_at  timestamptz NOT NULL,
            PRIMARY KEY (deal_id, kind, raised_at)
        )
        """
    )
    op.execute(
        "CREATE INDEX deal_flags_open ON deal_flags (raised_at, deal_id, kind)"
        " WHERE cleared_at IS NULL"
    )
    op.execute(
        """
        CREATE TABLE blocker_log (
            blocker_id   uuid PRIMARY KEY,
            deal_id      uuid        NOT NULL,
            category     text        NOT NULL,
            raised_at    timestamptz NOT NULL,
            resolved_at  timestamptz
        )
        """
    )


def downgrade() -> None:
    for table in ("blocker_log", "deal_flags", "flag_subjects"):
        op.execute(f"DROP TABLE {table}")
    for column in ("left_reason", "left_override_by", "owner", "amount", "pipeline"):
        op.execute(f"ALTER TABLE stage_intervals DROP COLUMN {column}")
