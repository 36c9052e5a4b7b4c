"""Open deals of each stage by amount, highest first: pipeline health lists the early-stage
deals and those closing in the period by (weighted) value, and reads each stage's highest
from this index instead of sorting every open deal on each request. Only stage, status,
amount and pipeline changes touch it, so activity updates stay HOT.

Revision ID: 0023_open_deals_by_value
Revises: 0022_no_event_id_index
Create Date: 2026-12-08
"""

from alembic import op

revision = "0023_open_deals_by_value"
down_revision = "0022_no_event_id_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX deals_open_value ON deals"
        " (pipeline_key, pipeline_version, stage, (coalesce(amount, 0)) DESC, deal_id)"
        " WHERE status = 'open'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX deals_open_value")
