"""Appends no longer NOTIFY from their own transaction (the store wakes followers after
commit): a NOTIFY in the appending transaction holds PostgreSQL's notification queue lock
through the commit's WAL flush, so concurrent appends could not share a flush.

Revision ID: 0015_notify_after_commit
Revises: 0014_ui_sessions
Create Date: 2026-11-24
"""

from alembic import op

revision = "0015_notify_after_commit"
down_revision = "0014_ui_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER events_notify ON events")
    op.execute("DROP FUNCTION events_notify()")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('events', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_notify AFTER INSERT ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_notify()"
    )
