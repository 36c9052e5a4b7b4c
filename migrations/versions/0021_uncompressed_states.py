"""Deal states and flag subjects stored uncompressed (STORAGE EXTERNAL): both documents run
past 2 kB, so every write compressed them with pglz, half the cost of writing the row (100k
states: COPY 3.9 -> 2.0 s, UPDATE 3.8 -> 2.0 s; reads unchanged). The price is disk: about
1.7x for these two tables. Rows written before keep their compressed form until rewritten.

Revision ID: 0021_uncompressed_states
Revises: 0020_deal_recorded_at
Create Date: 2026-12-07
"""

from alembic import op

revision = "0021_uncompressed_states"
down_revision = "0020_deal_recorded_at"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE deal_states ALTER COLUMN state SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE flag_subjects ALTER COLUMN subject SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE deal_states ALTER COLUMN state SET STORAGE EXTENDED")
    op.execute("ALTER TABLE flag_subjects ALTER COLUMN subject SET STORAGE EXTENDED")
