"""Open deals in the weekly review's order (owner, name, id, compared by code point): its
first page is read by walking this index instead of sorting every listed deal (most open
deals, on a team whose deals move weekly). Only owner, name and status changes touch it, so
activity updates stay HOT.

Revision ID: 0024_open_deals_by_review_place
Revises: 0023_open_deals_by_value
Create Date: 2026-12-08
"""

from alembic import op

revision = "0024_open_deals_by_review_place"
down_revision = "0023_open_deals_by_value"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX deals_open_review ON deals"
        ' (owner COLLATE "C", name COLLATE "C", deal_id) WHERE status = \'open\''
    )


def downgrade() -> None:
    op.execute("DROP INDEX deals_open_review")
