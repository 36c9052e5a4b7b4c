"""Sales targets per owner and period, set by managers (PUT /v1/targets/{owner}/{period}).

A settings table like api_keys, not a read model: every PUT adds a row, so the target as it
stood at any past time (as_of) stays answerable, and a rebuild never touches it.

Revision ID: 0013_sales_targets
Revises: 0012_webhooks
Create Date: 2026-11-24
"""

from alembic import op

revision = "0013_sales_targets"
down_revision = "0012_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE sales_targets ("
        " owner text NOT NULL,"
        " period text NOT NULL,"
        " amount numeric NOT NULL CHECK (amount >= 0),"
        " currency text,"
        " set_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
        " set_by text NOT NULL,"
        " PRIMARY KEY (owner, period, set_at))"
    )
    op.execute("CREATE INDEX sales_targets_period ON sales_targets (period, set_at)")


def downgrade() -> None:
    op.execute("DROP TABLE sales_targets")
