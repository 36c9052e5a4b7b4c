"""Pipelines as data: find every pipeline's versions without scanning the log, and keep the
pipeline version each stay in a stage was lived under (analytics filter by it).

A partial index holds just the pipeline events (a handful among millions of deal events).
stage_intervals gains a column its projection fills, so it is emptied and rewound: the
projector (or `dealledger rebuild stage_intervals`) replays it.

Revision ID: 0011_pipeline_versions
Revises: 0010_verifiable_log
Create Date: 2026-11-24
"""

from alembic import op

revision = "0011_pipeline_versions"
down_revision = "0010_verifiable_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX events_pipeline_versions ON events (stream_id, version)"
        " WHERE type = 'PipelineVersionDefined'"
    )
    op.execute("TRUNCATE stage_intervals")
    op.execute(
        "UPDATE projection_checkpoints SET transaction_id = '0'::xid8, position = 0"
        " WHERE name = 'stage_intervals'"
    )
    op.execute("ALTER TABLE stage_intervals ADD COLUMN pipeline_version integer NOT NULL DEFAULT 1")


def downgrade() -> None:
    op.execute("ALTER TABLE stage_intervals DROP COLUMN pipeline_version")
    op.execute("DROP INDEX events_pipeline_versions")
