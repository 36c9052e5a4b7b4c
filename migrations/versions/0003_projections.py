"""Read models (deals, stage_intervals, deal_activity) and projection checkpoints.

Revision ID: 0003_projections
Revises: 0002_idempotency_keys
Create Date: 2026-11-23
"""

from alembic import op

revision = "0003_projections"
down_revision = "0002_idempotency_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A checkpoint is the (transaction id, position) pair of the last event applied.
    op.execute(
        """
        CREATE TABLE projection_checkpoints (
            name            text PRIMARY KEY,
            transaction_id  xid8   NOT NULL DEFAULT '0',
            position        bigint NOT NULL DEFAULT 0
        )
        """
    )
    op.execute(
        """
        CREATE TABLE deals (
            deal_id           uuid PRIMARY KEY,
            opened_position   bigint      NOT NULL,
            last_position     bigint      NOT NULL,
            version           integer     NOT NULL,
            name              text        NOT NULL,
            owner             text        NOT NULL,
            stage             text        NOT NULL,
            status            text        NOT NULL,
            amount            numeric,
            currency          text,
            close_date        date,
            stage_entered_at  timestamptz,
            state             jsonb       NOT NULL
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX deals_opened_position ON deals (opened_position)")
    op.execute("CREATE INDEX deals_owner ON deals (owner, opened_position)")
    op.execute("CREATE INDEX deals_stage ON deals (stage, opened_position)")
    op.execute("CREATE INDEX deals_status ON deals (status, opened_position)")
    op.execute(
        """
        CREATE TABLE stage_intervals (
            deal_id     uuid        NOT NULL,
            seq         integer     NOT NULL,
            stage       text        NOT NULL,
            entered_at  timestamptz NOT NULL,
            left_at     timestamptz,
            left_how    text,
            duration_seconds double precision
                GENERATED ALWAYS AS (extract(epoch FROM left_at - entered_at)) STORED,
            PRIMARY KEY (deal_id, seq)
        )
        """
    )
    op.execute("CREATE INDEX stage_intervals_stage ON stage_intervals (stage, entered_at)")
    op.execute(
        """
        CREATE TABLE deal_activity (
            deal_id                 uuid PRIMARY KEY,
            last_buyer_activity_at  timestamptz,
            last_activity_at        timestamptz NOT NULL,
            buyer_activity_count    integer     NOT NULL,
            counts_by_type          jsonb       NOT NULL
        )
        """
    )


def downgrade() -> None:
    for table in ("deal_activity", "stage_intervals", "deals", "projection_checkpoints"):
        op.execute(f"DROP TABLE {table}")
