"""Open deals by stage in the order they entered it: pipeline health lists each stage's
longest stayers (and the aging and long ones among them) and reads its p90 age from this
index, instead of sorting every open deal on each request (a third of its time at 80k open
deals). Only stage and status changes touch it, so activity updates stay HOT.

Revision ID: 0019_open_deals_by_stage
Revises: 0018_flag_due
Create Date: 2026-12-06
"""

from alembic import op

revision = "0019_open_deals_by_stage"
down_revision = "0018_flag_due"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX deals_open_stage_entered ON deals"
        " (stage, (coalesce(stage_entered_at, opened_at)), deal_id) WHERE status = 'open'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX deals_open_stage_entered")
