"""Event times lie in the years 1970 to 8999: ±infinity never enters the log.

The service refuses other times before they get here (judging the year as written, so the
bounds here are a day wider for offsets); this is the last line. NOT VALID: rows already
stored are not scanned (and stay readable); every new row is checked.

Revision ID: 0009_time_bounds
Revises: 0008_projection_failures
Create Date: 2026-11-23
"""

from alembic import op

revision = "0009_time_bounds"
down_revision = "0008_projection_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in ("occurred_at", "recorded_at"):
        op.execute(
            f"ALTER TABLE events ADD CONSTRAINT events_{column}_bounded CHECK ("
            f"{column} >= '1969-12-31 00:00:00+00' AND {column} < '9000-01-02 00:00:00+00'"
            ") NOT VALID"
        )


def downgrade() -> None:
    for column in ("occurred_at", "recorded_at"):
        op.execute(f"ALTER TABLE events DROP CONSTRAINT events_{column}_bounded")
