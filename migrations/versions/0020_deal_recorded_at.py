"""When each deal's last event was recorded, on `deals`: the weekly review lists open deals
from `deals` (a narrow table) and tells which ones changed after the time asked, instead of
scanning `flag_subjects`, whose rows carry each deal's whole flag subject.

Revision ID: 0020_deal_recorded_at
Revises: 0019_open_deals_by_stage
Create Date: 2026-12-06
"""

from alembic import op

revision = "0020_deal_recorded_at"
down_revision = "0019_open_deals_by_stage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE deals ADD COLUMN last_recorded_at timestamptz")
    op.execute(
        "UPDATE deals d SET last_recorded_at = s.last_recorded_at"
        " FROM flag_subjects s WHERE s.deal_id = d.deal_id"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE deals DROP COLUMN last_recorded_at")
