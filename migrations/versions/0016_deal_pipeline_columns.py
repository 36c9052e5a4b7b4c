"""The deals read model keeps each deal's pipeline key and version as columns: the forecast
and the pipeline's totals group by them, and reading them out of the state's JSON cost most
of those queries at 100k deals (every row's state detoasted).

Revision ID: 0016_deal_pipeline_columns
Revises: 0015_notify_after_commit
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016_deal_pipeline_columns"
down_revision = "0015_notify_after_commit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE deals ADD COLUMN pipeline_key text NOT NULL DEFAULT 'default',"
        " ADD COLUMN pipeline_version int NOT NULL DEFAULT 1"
    )
    op.execute(
        "UPDATE deals SET pipeline_key = state->>'pipeline_key',"
        " pipeline_version = (state->>'pipeline_version')::int"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE deals DROP COLUMN pipeline_key, DROP COLUMN pipeline_version")
