"""The verifiable log: a Merkle tree over the events in gap-safe order, and signed checkpoints.

Revision ID: 0010_verifiable_log
Revises: 0009_time_bounds
Create Date: 2026-11-23
"""

from alembic import op

revision = "0010_verifiable_log"
down_revision = "0009_time_bounds"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The sequencer's read model (rebuildable from the log): each event's leaf index, and
    # every complete subtree's hash, so an append and a proof read O(log n) rows.
    op.execute(
        """
        CREATE TABLE log_leaves (
            leaf_index  bigint  PRIMARY KEY,
            position    bigint  NOT NULL UNIQUE,
            stream_id   uuid    NOT NULL,
            version     integer NOT NULL,
            event_hash  bytea   NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX log_leaves_stream ON log_leaves (stream_id, version)")
    op.execute(
        """
        CREATE TABLE log_nodes (
            height      smallint NOT NULL,
            index       bigint   NOT NULL,
            hash        bytea    NOT NULL,
            PRIMARY KEY (height, index)
        )
        """
    )
    # Signed checkpoints are history: never rebuilt, never changed by the service.
    op.execute(
        """
        CREATE TABLE log_checkpoints (
            tree_size     bigint      PRIMARY KEY CHECK (tree_size > 0),
            root_hash     bytea       NOT NULL,
            note          text        NOT NULL,
            verifier_key  text        NOT NULL,
            signed_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE FUNCTION log_checkpoints_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'signed checkpoints are append-only: % is not allowed', TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER log_checkpoints_no_change BEFORE UPDATE OR DELETE ON log_checkpoints "
        "FOR EACH ROW EXECUTE FUNCTION log_checkpoints_refuse_change()"
    )
    op.execute(
        "CREATE TRIGGER log_checkpoints_no_truncate BEFORE TRUNCATE ON log_checkpoints "
        "FOR EACH STATEMENT EXECUTE FUNCTION log_checkpoints_refuse_change()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE log_checkpoints")
    op.execute("DROP FUNCTION log_checkpoints_refuse_change()")
    op.execute("DROP TABLE log_nodes")
    op.execute("DROP TABLE log_leaves")
