"""The append-only, hash-chained events table.

Revision ID: 0001_events
Revises:
Create Date: 2026-11-23
"""

from alembic import op

revision = "0001_events"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # stream_id leads every unique key so the table can be distributed by deal later.
    op.execute(
        """
        CREATE TABLE events (
            position        bigint GENERATED ALWAYS AS IDENTITY,
            stream_id       uuid        NOT NULL,
            version         integer     NOT NULL CHECK (version >= 1),
            event_id        uuid        NOT NULL,
            type            text        NOT NULL,
            schema_version  integer     NOT NULL DEFAULT 1,
            data            jsonb       NOT NULL,
            metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
            occurred_at     timestamptz NOT NULL,
            recorded_at     timestamptz NOT NULL DEFAULT now(),
            transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
            prev_hash       bytea,
            hash            bytea       NOT NULL,
            PRIMARY KEY (stream_id, version),
            UNIQUE (stream_id, event_id)
        )
        """
    )
    # Gap-safe catch-up reads order and filter by (transaction_id, position).
    op.execute("CREATE INDEX events_transaction_position ON events (transaction_id, position)")
    op.execute("CREATE INDEX events_position ON events (position)")
    op.execute(
        """
        CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'events is append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Record a new event (e.g. a retraction) instead of changing history.';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER events_no_update_delete BEFORE UPDATE OR DELETE ON events "
        "FOR EACH ROW EXECUTE FUNCTION events_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events "
        "FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()"
    )
    # ALWAYS: the triggers fire even under session_replication_role = replica.
    op.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_update_delete")
    op.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate")
    # Wakes projection runners; they also poll, so a lost notification only delays.
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


def downgrade() -> None:
    raise RuntimeError("the event log is never dropped by a migration")
