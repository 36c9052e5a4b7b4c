"""Outbound webhooks: subscriptions, deliveries (the outbox the log consumer fills), and the
flags projection's record of every flag it raised (flag.raised comes from there).

Revision ID: 0012_webhooks
Create Date: 2026-11-24
"""

from alembic import op

revision = "0012_webhooks"
down_revision = "0011_pipeline_versions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_endpoints (
            endpoint_id           uuid        PRIMARY KEY,
            seq                   bigserial   NOT NULL UNIQUE,
            url                   text        NOT NULL,
            description           text        NOT NULL DEFAULT '',
            event_types           text[]      NOT NULL,
            filters               jsonb       NOT NULL DEFAULT '{}',
            enabled               boolean     NOT NULL DEFAULT true,
            disabled_reason       text,
            disabled_at           timestamptz,
            secret                text        NOT NULL,
            previous_secret       text,
            previous_secret_until timestamptz,
            failing_since         timestamptz,
            created_at            timestamptz NOT NULL DEFAULT now(),
            created_by            text,
            updated_at            timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    # One row per notification per endpoint; the payload is kept as sent (the same bytes on
    # every attempt). A worker leases a row (lease_until) instead of holding a transaction
    # open across the HTTP call, which would hold every gap-safe reader back.
    op.execute(
        """
        CREATE TABLE webhook_deliveries (
            delivery_id      uuid        PRIMARY KEY,
            seq              bigserial   NOT NULL UNIQUE,
            endpoint_id      uuid        NOT NULL
                             REFERENCES webhook_endpoints ON DELETE CASCADE,
            message_id       text        NOT NULL,
            event_type       text        NOT NULL,
            position         bigint,
            deal_id          uuid,
            payload          text        NOT NULL,
            event_at         timestamptz NOT NULL,
            status           text        NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts         integer     NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            lease_token      uuid,
            lease_until      timestamptz,
            last_attempt_at  timestamptz,
            last_status_code integer,
            last_error       text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            delivered_at     timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, seq)"
        " WHERE status = 'pending'"
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries"
        " (endpoint_id, deal_id, seq) WHERE status = 'pending'"
    )
    op.execute("CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, seq)")
    # Written by the flags projection in its own transaction, once per flag and severity
    # (rebuilds find them there and add nothing); read gap-safely by the webhook consumer.
    # `evaluated_at` is the time the rules were judged at (the event's or the sweep's).
    op.execute(
        """
        CREATE TABLE flag_raisings (
            deal_id        uuid        NOT NULL,
            kind           text        NOT NULL,
            raised_at      timestamptz NOT NULL,
            severity       text        NOT NULL,
            numbers        jsonb       NOT NULL,
            deal           jsonb       NOT NULL,
            evaluated_at   timestamptz NOT NULL,
            seq            bigserial   NOT NULL,
            transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
            PRIMARY KEY (deal_id, kind, raised_at, severity)
        )
        """
    )
    op.execute("CREATE INDEX flag_raisings_order ON flag_raisings (transaction_id, seq)")


def downgrade() -> None:
    op.execute("DROP TABLE flag_raisings")
    op.execute("DROP TABLE webhook_deliveries")
    op.execute("DROP TABLE webhook_endpoints")
