"""When each deal is next due for the flags' sweep: the projector judges a deal between
events only when time may raise or escalate one of its flags, or its flags' numbers need
bringing up to date, instead of every open deal every minute. Open and nurtured deals are due
at once after this migration (NULL: never by time alone).

Revision ID: 0018_flag_due
Revises: 0017_deal_states
Create Date: 2026-12-06
"""

from alembic import op

revision = "0018_flag_due"
down_revision = "0017_deal_states"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE flag_subjects ADD COLUMN due_at timestamptz")
    op.execute("UPDATE flag_subjects SET due_at = now() WHERE status IN ('open', 'nurture')")
    op.execute("CREATE INDEX flag_subjects_due ON flag_subjects (due_at, deal_id)")


def downgrade() -> None:
    op.execute("DROP INDEX flag_subjects_due")
    op.execute("ALTER TABLE flag_subjects DROP COLUMN due_at")
